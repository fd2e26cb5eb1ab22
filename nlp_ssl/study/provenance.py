"""What made a results file: the command, and the commit of the code that ran it (and whether that code had
uncommitted changes), recorded in every ``results.json`` and ``results.md`` a study writes.

The commit is the checkout the ``nlp_ssl`` package itself lives in; an installed package (no checkout
of its own) records none. "Dirty" looks at the code only (the package and the recipes beside it), so a
study that rewrites its own results folder does not mark itself dirty.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

#: The checkout (if any) that holds the package: its ``nlp_ssl/`` and ``recipes/``.
CHECKOUT = Path(__file__).resolve().parents[2]
CODE = ("nlp_ssl", "recipes")


def command_line(script: str, argv: list[str] | None = None) -> str:
    """``python <script> <arguments>`` as it can be typed again (the script relative to the working folder)."""
    path = Path(script).resolve()
    try:
        path = path.relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return shlex.join(["python", str(path), *(sys.argv[1:] if argv is None else argv)])


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_state() -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout the package runs from."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != CHECKOUT:  # an installed package inside some other repository
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *CODE)
    return {"commit": _git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def record(command: str) -> dict:
    return {"command": command or None, **code_state()}


def line(provenance: dict) -> str:
    """One line for a report: how to make it again."""
    command = f"`{provenance['command']}`" if provenance.get("command") else "an unrecorded command"
    if not provenance.get("commit"):
        return f"- written by {command}, code not in a git checkout"
    dirty = " with uncommitted changes to the code" if provenance.get("dirty") else ""
    return f"- written by {command} at commit {provenance['commit'][:12]}{dirty}"
