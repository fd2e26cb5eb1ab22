"""One study run: a recipe as a subprocess into its own folder, reused when finished, continued when not.

A subprocess, not a call in this process, so a run is exactly what a user gets from the command
line (its own seed handling, process group, lock and exit code), and a crash in one run cannot
leave state behind for the next.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from nlp_ssl.errors import EXIT_BAD_INPUT, ConfigError, RunEnded

RECIPES_PACKAGE = "nlp_ssl.recipes"
RESULTS_FILE = "all_results.json"
HISTORY_FILE = "trainer_history.json"


def recipes_dir() -> Path:
    """The folder of the recipe scripts and their ``configs/``: the one place the study looks for it.

    ``recipes/`` is installed as the package ``nlp_ssl.recipes`` (in a checkout, that is ``recipes/``
    itself), so the same runs work from a clone and from ``pip install``.
    """
    try:
        folder = Path(str(resources.files(RECIPES_PACKAGE)))
    except ModuleNotFoundError:
        folder = None
    if folder is None or not (folder / "configs").is_dir():
        raise ConfigError(f"{RECIPES_PACKAGE}: the recipes are not installed (no {folder or RECIPES_PACKAGE}/configs)")
    return folder


def recipe_path(recipe: str) -> Path:
    path = recipes_dir() / f"{recipe}.py"
    if not path.is_file():
        raise ConfigError(f"recipe {recipe!r}: no {path}")
    return path


def recipe_yaml(recipe: str) -> Path:
    """The recipe's default config, which its runs start from."""
    return recipes_dir() / "configs" / f"{recipe}.yaml"


def run_recipe(recipe: str, args: list[str], out: Path, reuse: bool = True) -> dict:
    """Run ``recipes/<recipe>.py args`` into ``out`` (log beside it, ``out.log``); return its all_results.

    ``reuse``: a finished run is read, not rerun, and an unfinished one continues from its newest
    checkpoint (``resume=auto``; the trainer refuses a fresh start over old checkpoints). Without
    ``reuse`` the folder is removed first. A run that fails raises ``ConfigError`` for bad input
    (exit 2, with the run's own one-line message), else ``RunEnded`` with the run's exit code, so a
    preempted run (75) stops the study with 75 too and a rerun continues it.
    """
    out = Path(out)
    results = out / RESULTS_FILE
    if reuse and results.is_file():
        return json.loads(results.read_text(encoding="utf-8"))
    if not reuse:
        shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    cmd = [sys.executable, str(recipe_path(recipe)), *args, f"output_dir={out}", "progress_bar=false", "resume=auto"]
    start = time.perf_counter()
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(cmd)}\n")
        handle.flush()
        code = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        message = f"{recipe} run {out.name} failed (exit {code}): {lines[-1] if lines else '(no output)'}; log: {log}"
        if code == EXIT_BAD_INPUT:
            raise ConfigError(message)
        ended = RunEnded(message + "; rerun the study to continue")
        ended.exit_code = code
        raise ended
    if not results.is_file():
        raise ConfigError(f"{recipe} run {out.name} exited 0 but wrote no {RESULTS_FILE}; log: {log}")
    print(f"{recipe} -> {out} ({time.perf_counter() - start:.0f}s)", flush=True)
    return json.loads(results.read_text(encoding="utf-8"))


def read_history(out: Path) -> list[dict]:
    path = Path(out) / HISTORY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def evaluations(history: list[dict]) -> list[dict]:
    """The validation points, once each: the trainer re-evaluates the best model at the last step."""
    evals = [h for h in history if "eval_accuracy" in h]
    if len(evals) > 1 and evals[-1]["step"] == evals[-2]["step"]:
        evals = evals[:-1]
    return evals


def validation_loss(point: dict) -> float:
    """The classification part of the validation loss (text runs with an auxiliary LM loss report both)."""
    return point.get("eval_cls_loss", point["eval_loss"])


def summarise_history(history: list[dict]) -> dict:
    """Best vs last: validation accuracy at each, where validation loss was lowest, whether training loss fell."""
    evals = evaluations(history)
    trains = [h["train_loss"] for h in history if "train_loss" in h]
    if not evals:
        return {"train_loss_fell": bool(trains) and trains[-1] < trains[0]}
    losses = [validation_loss(h) for h in evals]
    best = max(range(len(evals)), key=lambda i: evals[i]["eval_accuracy"])
    lowest = min(range(len(evals)), key=losses.__getitem__)
    return {
        "last_step": evals[-1]["step"],
        "best_val_accuracy": evals[best]["eval_accuracy"],
        "last_val_accuracy": evals[-1]["eval_accuracy"],
        "min_val_loss_step": evals[lowest]["step"],
        "min_val_loss": losses[lowest],
        "last_val_loss": losses[-1],
        "train_loss_fell": bool(trains) and trains[-1] < trains[0],
    }
