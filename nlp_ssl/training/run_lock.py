"""One run per ``output_dir``: an advisory lock held for the run's whole life.

The lock is ``fcntl.flock`` on ``output_dir/.lock``, so the kernel drops it when the holder dies, even
by SIGKILL: a lock file left by a dead run is simply taken over. The file names the holder (host,
pid, start time) for the message a second run gets. In a multi-process run only the main process
locks; the others learn the outcome from it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from nlp_ssl.errors import ConfigError

LOCK_FILE = ".lock"

#: Locks this process holds, by resolved output_dir (a process may build several trainers on one
#: folder), with whether taking the lock created the folder.
_HELD: dict[str, tuple[int, bool]] = {}


def acquire(output_dir: str | os.PathLike) -> None:
    """Lock ``output_dir`` for this process, or raise ConfigError naming the run that holds it."""
    folder = Path(output_dir).resolve()
    if str(folder) in _HELD:
        return
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:  # a read-only file system, no permission, a file in the way
        raise ConfigError(f"output_dir {output_dir} cannot be written: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe(fd)
        os.close(fd)
        raise ConfigError(
            f"output_dir {output_dir} is in use by another run ({holder}); wait for it to end or choose another output_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
    _HELD[str(folder)] = (fd, created)


def release(output_dir: str | os.PathLike) -> None:
    held = _HELD.pop(str(Path(output_dir).resolve()), None)
    if held is not None:
        fcntl.flock(held[0], fcntl.LOCK_UN)
        os.close(held[0])


def release_all() -> None:
    """Release every lock; a folder that the lock itself created and that holds nothing else (a run
    refused on bad input) is removed, so bad input leaves no trace."""
    for name, (fd, created) in list(_HELD.items()):
        release(name)
        folder = Path(name)
        if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            (folder / LOCK_FILE).unlink(missing_ok=True)
            folder.rmdir()


def _describe(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"
