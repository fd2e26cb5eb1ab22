"""Shared test helpers: tiny tokenizers and corpora built offline, and recipe subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
