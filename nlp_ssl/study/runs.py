"""The one study runner: every cell of a study is a run folder, made once and read from then on.

A fine-tuning cell is the recipe as a subprocess, not a call in this process, so a run is exactly
what a user gets from the command line (its own seed handling, process group, lock and exit code),
and a crash in one run cannot leave state behind for the next. A baseline is fitted here and saved
in a run folder of its own, like a run. A finished cell (its ``all_results.json`` exists) is read,
not run again; an unfinished run continues from its last checkpoint (``resume=auto``). A study may
read the finished cells of some methods from another study's folder (``runs_from``), so checks
beside a study need no copies of its runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from nlp_ssl.atomic import write_json
from nlp_ssl.config import parse_config
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
    if reuse and (out / RESULTS_FILE).is_file():
        return read_results(out)
    if not reuse:
        shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    cmd = [sys.executable, str(recipe_path(recipe)), *args, f"output_dir={out}", "log.progress_bar=false", "resume=auto"]
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
    if not (out / RESULTS_FILE).is_file():
        raise ConfigError(f"{recipe} run {out.name} exited 0 but wrote no {RESULTS_FILE}; log: {log}")
    print(f"{recipe} -> {out} ({time.perf_counter() - start:.0f}s)", flush=True)
    return read_results(out)


# ------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Job:
    """One cell of a study: a method at k labels per class and a seed (and a rate and budget, where the plan sets them)."""

    method: str
    k: int
    seed: int
    learning_rate: float | None = None  # None: the recipe's own rate (and always for a baseline)
    steps: int | None = None  # None: the main budget of k

    @property
    def name(self) -> str:
        name = f"{self.method}_k{self.k}_s{self.seed}"
        if self.learning_rate is not None:
            name += f"_lr{self.learning_rate:g}"
        return name + (f"_steps{self.steps}" if self.steps is not None else "")

    def identity(self) -> dict:
        """The fields that open the cell's record in results.json."""
        return {"run": self.name, "method": self.method, "k_per_class": self.k, "seed": self.seed}


def job_args(cfg, study, job: Job) -> list[str]:
    """The recipe arguments of a cell: the study's, k's, the method's, its overrides, then the cell's own."""
    args = [*cfg.finetune_args, *cfg.k_arguments(job.k), *study.methods[job.method].args,
            *cfg.method_overrides.get(job.method, [])]
    if job.learning_rate is not None:
        args.append(f"optim.learning_rate={job.learning_rate}")
    if job.steps is not None:
        args.append(f"train.max_steps={job.steps}")
    return [*args, f"data.k_per_class={job.k}", f"seed={job.seed}"]


def run_folder(cfg, job: Job) -> Path:
    """Where a cell is: this study's ``runs/<name>``, or a finished one in the study ``runs_from`` names for its method."""
    own = Path(cfg.output_dir) / "runs" / job.name
    if (own / RESULTS_FILE).is_file() or not (cfg.reuse or cfg.report_only):
        return own
    source = cfg.runs_from.get(job.method)
    if source and (Path(source) / "runs" / job.name / RESULTS_FILE).is_file():
        return Path(source) / "runs" / job.name
    return own


def run_job(cfg, study, job: Job) -> dict | None:
    """A cell's all_results: read when finished, else made (under ``report_only``: None).

    A fine-tuning cell is a recipe subprocess; a baseline gets the config a run of the same k and
    seed reads, so it fits on exactly the rows that run trains on, and its scores are saved as a run.
    """
    folder = run_folder(cfg, job)
    if (cfg.reuse or cfg.report_only) and (folder / RESULTS_FILE).is_file():
        return read_results(folder)
    if cfg.report_only:
        return None
    args = job_args(cfg, study, job)
    baseline = study.methods[job.method].baseline
    if baseline is None:
        return run_recipe(study.recipe, args, folder, cfg.reuse)
    start = time.perf_counter()
    scores = baseline(parse_config(study.config_class, args, default_yaml=recipe_yaml(study.recipe)))
    results = {**scores, "train_runtime_s": time.perf_counter() - start, "baseline": job.method}
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RESULTS_FILE, results)
    return results


def run_jobs(cfg, study, jobs: list[Job]) -> None:
    """Baselines here, one after another; fine-tuning runs ``cfg.workers`` at a time. The first failure
    stops the study (runs already started finish or stop with it) with that run's error."""
    if cfg.report_only:
        return
    for job in jobs:
        if study.methods[job.method].baseline is not None:
            _report(job, run_job(cfg, study, job))
    tuned = [job for job in jobs if study.methods[job.method].baseline is None]
    # Several runs at once share the cores: each gets its part, unless the user chose a thread count.
    share = cfg.workers > 1 and "OMP_NUM_THREADS" not in os.environ
    if share:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // cfg.workers))
    try:
        with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
            futures = {pool.submit(run_job, cfg, study, job): job for job in tuned}
            try:
                for future in as_completed(futures):
                    _report(futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        if share:
            os.environ.pop("OMP_NUM_THREADS", None)


def _report(job: Job, results: dict) -> None:
    print(f"[study] {job.name}: test accuracy {100 * results['test_accuracy']:.2f}%", flush=True)


# ---------------------------------------------------------------------------------- run files


def read_results(folder: Path) -> dict | None:
    path = Path(folder) / RESULTS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_history(folder: Path) -> list[dict]:
    path = Path(folder) / HISTORY_FILE
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
