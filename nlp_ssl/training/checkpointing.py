"""Checkpoints under ``output_dir/checkpoints``: written atomically, verified, rotated, found again for resume.

A checkpoint is written into a hidden ``.tmp-…`` folder; a manifest of every file's size and
SHA-256 is written last, and only then is the folder renamed to ``step_…``. So a crash mid-save
leaves the previous checkpoint as the latest, and a checkpoint damaged later (a truncated or deleted
file, a disk that lied) is caught before it is used: ``resume=auto`` falls back to the newest
intact one, and an explicit ``resume=<path>`` names the bad file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

from nlp_ssl import atomic
from nlp_ssl.errors import CheckpointError, ConfigError, RunComplete

logger = logging.getLogger("nlp_ssl.training.checkpointing")

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
#: Written last by a finished run: its presence means every final output is on disk.
RESULTS_FILE = "all_results.json"
_NAME = re.compile(r"^step_(\d+)$")


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def checkpoint_step(folder: Path) -> int:
    """The step of a checkpoint folder named by :func:`checkpoint_dir` (0 for another name)."""
    m = _NAME.match(folder.name)
    return int(m.group(1)) if m else 0


def temporary_dir(final: Path) -> Path:
    return final.parent / f".tmp-{final.name}"


def list_checkpoints(root: Path) -> list[Path]:
    """Published checkpoints (intact or not), oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(folder: Path) -> None:
    """Record every file's size and checksum; written last, it is what makes a checkpoint complete."""
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE
    }
    atomic.write_json(folder / MANIFEST_FILE, {"files": files}, indent=1)


def verify_checkpoint(folder: Path) -> None:
    """Raise CheckpointError naming the first missing, truncated or altered file of ``folder``."""
    manifest_path = folder / MANIFEST_FILE
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {folder} is incomplete: {MANIFEST_FILE} is missing") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint {folder} is damaged: {MANIFEST_FILE} is unreadable") from None
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {folder} is damaged: {name} is missing")
        size = path.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(f"checkpoint {folder} is damaged: {name} has {size} bytes, expected {expected['size']}")
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"checkpoint {folder} is damaged: {name} does not match its checksum")


def publish_checkpoint(tmp: Path, final: Path) -> None:
    """Make a fully written checkpoint visible under its final name."""
    atomic.publish_dir(tmp, final)


def rotate_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints, and stale temporary folders; return the deleted.

    Only the run holding the output_dir's lock calls this, so no other run's files are touched.
    """
    deleted = []
    for stale in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    found = list_checkpoints(root)
    if keep > 0:
        for old in found[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
            deleted.append(old)
    return deleted


def newest_intact(root: Path) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are named in a warning and skipped."""
    found = list_checkpoints(root)
    problems = []
    for candidate in reversed(found):
        try:
            verify_checkpoint(candidate)
        except CheckpointError as e:
            logger.warning("skipping %s", e)
            problems.append(str(e))
            continue
        return candidate
    if found:
        raise CheckpointError(
            f"no intact checkpoint under {root}: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    return None


def check_not_finished(output_dir: Path, max_steps: int | None) -> None:
    """``resume=auto`` on a run whose final outputs are all written, and that reached ``max_steps``
    (or stopped early): say so instead of retraining. A larger ``max_steps`` continues the run."""
    results = output_dir / RESULTS_FILE
    if not results.is_file():
        return
    try:
        done = json.loads(results.read_text(encoding="utf-8"))
    except ValueError:
        return
    steps = done.get("steps") or 0
    if done.get("stopped_early") or max_steps is None or steps >= max_steps:
        raise RunComplete(f"output_dir {output_dir} holds a finished run ({steps} steps, see {results}); nothing to do")


def resolve_resume(resume: str | None, root: Path, max_steps: int | None = None) -> Path | None:
    """``None``/``""`` → fresh start; ``auto`` → newest intact checkpoint or fresh; else a checkpoint path.

    A fresh start over an earlier run's checkpoints is refused: rotation would then mix the two runs
    (and could delete the new run's checkpoints as the "older" ones), and ``resume=auto`` would later
    pick the wrong run.
    """
    if not resume:
        found = list_checkpoints(root)
        if found:
            raise ConfigError(
                f"output_dir {root.parent} already holds checkpoints of an earlier run (latest: {found[-1].name}); "
                "pass resume=auto to continue it, or choose another output_dir"
            )
        return None
    if resume == "auto":
        check_not_finished(root.parent, max_steps)
        return newest_intact(root)
    path = Path(resume)
    if not path.exists():
        raise ConfigError(f"resume path {resume} does not exist")
    if not (path / MANIFEST_FILE).is_file() and not (path / STATE_FILE).is_file():
        inner = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if inner is None:
            raise ConfigError(f"resume path {resume} is not a checkpoint (no {MANIFEST_FILE}) and holds none")
        path = inner
    verify_checkpoint(path)
    return path


#: Below this many free bytes a failed write is taken to be a full disk (torch and safetensors do
#: not always pass on the ENOSPC that caused their failure).
_NEARLY_FULL = 16 * 1024 * 1024


def write_failure(exc: BaseException, folder: Path) -> str | None:
    """What went wrong when writing under ``folder`` raised ``exc``, in a few words; None for an
    exception that is not about writing files (a bug, to be raised as it is)."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for e in chain:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "no space left on device"
        if any(s in str(e) for s in ("No space left", "StorageFull", "Disk quota exceeded")):
            return "no space left on device"
    io_like = isinstance(exc, OSError) or any(
        s in str(exc) for s in ("unexpected pos", "IoError", "file write failed", "PytorchStreamWriter")
    )
    if not io_like:
        return None
    try:
        if shutil.disk_usage(folder if folder.exists() else folder.parent).free < _NEARLY_FULL:
            return "no space left on device"
    except OSError:
        pass
    return f"write error ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no message'})"
