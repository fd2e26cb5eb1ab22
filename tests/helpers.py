"""Shared test helpers: tiny tokenizers and corpora built offline, and recipe subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORDS = (
    "the cat sat on a mat while two dogs ran across green fields under the bright morning sun and "
    "every bird sang loudly near old stone walls beside quiet rivers flowing toward distant mountains"
).split()


def toy_texts(n: int = 200, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) + "." for _ in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_recipe(script: str, *args: str, launcher: list[str] | None = None, timeout: int = 600, env: dict | None = None):
    """Run ``recipes/<script>`` as a user would; return the CompletedProcess (never raises on failure)."""
    cmd = (launcher or [sys.executable]) + [str(ROOT / "recipes" / script), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)


def last_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_one_line_exit(proc, code: int, pattern: str) -> None:
    """What bad input must end in: exit ``code``, no traceback, and a last line that says why."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(pattern, last_line(proc)), last_line(proc)


@contextlib.contextmanager
def silent_endpoint():
    """An endpoint that accepts connections and never answers: what a hung proxy or Hub looks like.
    Yields its URL and the connections it accepted."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted, stop = [], threading.Event()

    def accept_and_stay_silent():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def start_cli(cwd: Path, recipe: str, *args: str, threads: int | None = 1) -> subprocess.Popen:
    """``nlp-ssl run <recipe> ...`` as a user starts it, its output (stdout and stderr) readable line by line."""
    cli = Path(sys.executable).with_name("nlp-ssl")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.Popen([str(cli), "run", recipe, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)


def run_killed_and_resumed(cwd: Path, recipe: str, args: list[str], stop_at: str, threads: int | None = 1) -> str:
    """Run, SIGTERM once ``stop_at`` is logged (exit 75 after a checkpoint), then resume=auto; the logs."""
    stopped = start_cli(cwd, recipe, *args, threads=threads)
    lines = []
    for line in stopped.stdout:
        lines.append(line)
        if re.search(stop_at, line):
            stopped.send_signal(signal.SIGTERM)
            break
    log = "".join(lines) + stopped.communicate(timeout=300)[0]
    assert stopped.returncode == 75, log[-3000:]
    resumed = start_cli(cwd, recipe, *args, "resume=auto", threads=threads)
    log = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0 and "resumed from" in log, log[-3000:]
    return log
