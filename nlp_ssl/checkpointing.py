"""Checkpoints under ``output_dir/checkpoints``: written atomically, rotated, found again for resume.

A checkpoint is written into a hidden ``.tmp-…`` folder and renamed only once complete, so a crash
mid-save leaves the previous checkpoint as the latest good one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from nlp_ssl.errors import ConfigError

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d+)$")


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def temporary_dir(final: Path) -> Path:
    return final.parent / f".tmp-{final.name}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())


def publish_checkpoint(tmp: Path, final: Path) -> None:
    """Make a fully written checkpoint visible under its final name."""
    fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def rotate_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints, and stale temporary folders; return the deleted."""
    deleted = []
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    found = list_checkpoints(root)
    if keep > 0:
        for old in found[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
            deleted.append(old)
    return deleted


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """``None``/``""`` → fresh start; ``auto`` → latest checkpoint or fresh; else a checkpoint path.

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
        return latest_checkpoint(root)
    path = Path(resume)
    if not path.exists():
        raise ConfigError(f"resume path {resume} does not exist")
    if not (path / STATE_FILE).is_file():
        inner = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if inner is None:
            raise ConfigError(f"resume path {resume} is not a checkpoint (no {STATE_FILE}) and holds none")
        return inner
    return path
