"""All-or-nothing writes: a file or folder appears under its name only once it is complete.

Everything is written beside its target, flushed to disk, given the mode the user's umask asks for
(some writers, safetensors among them, create files 0600), then renamed into place. A crash at
any moment leaves either the old version or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """What ``open(..., "w")`` would give a new file: 0644 under the usual umask 022."""
    return 0o666 & ~_current_umask()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _plain(value):
    """numpy and torch scalars as numbers; anything else JSON cannot hold (a Path) as text."""
    try:
        return value.item() if hasattr(value, "item") else float(value)
    except (TypeError, ValueError):
        return str(value)


def write_json(path: str | os.PathLike, data, indent: int | None = 2) -> None:
    write_text(path, json.dumps(data, indent=indent, default=_plain))


def finalize_tree(folder: Path) -> None:
    """fsync every file under ``folder`` and give it the umask's mode."""
    mode = file_mode()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                os.fsync(f.fileno())
            if path.stat().st_mode & 0o777 != mode:
                os.chmod(path, mode)


def staging_dir(final: Path) -> Path:
    """A fresh hidden sibling of ``final`` to build a folder in, then :func:`publish_dir` it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))


def publish_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written folder in under ``final`` (an older ``final`` is moved aside, then removed)."""
    finalize_tree(tmp)
    old = final.parent / f".old-{final.name}"
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def publish_cache_dir(tmp: Path, final: Path, marker: str) -> None:
    """Publish a cache folder that every builder writes alike (a dataset, a tokenizer, an unpacked
    wheel): the first complete one stays. Two runs that build the same cache at once (a job array on
    a cold cache) then never swap a folder out from under a reader: the later builder drops its copy.
    ``marker`` is the file (or folder) a complete one has; a folder without it is replaced."""
    finalize_tree(tmp)
    try:
        os.rename(tmp, final)  # refused when another builder's complete folder is already there
        return
    except OSError:
        if not (final / marker).exists():
            publish_dir(tmp, final)  # a broken leftover: replace it
            return
    shutil.rmtree(tmp, ignore_errors=True)
