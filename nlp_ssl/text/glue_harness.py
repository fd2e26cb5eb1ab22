"""The GLUE harness: fine-tune one checkpoint on each task with :func:`nlp_ssl.text.text_finetuning.finetune`
(the same code, trainer and results writer as ``recipes/finetune_text.py``) and tabulate the dev scores.

Each task's best checkpoint is chosen on rows held out of its *training* set
(``data.validation_per_class``), so the dev set is seen once, for the score. The average is the
leaderboard's: the mean over tasks of each task's mean metric.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nlp_ssl import atomic
from nlp_ssl.config import check_ranges, load_config, save_config
from nlp_ssl.data.glue import (
    HUB_NAME,
    find_layout,
    get_task,
    glue_average,
    load_hub_task,
    load_task,
    missing_reason,
    result_key,
    task_score,
)
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.hub import apply_timeout
from nlp_ssl.text.text_finetuning import FinetuneTextConfig, finetune
from nlp_ssl.training.reporting import RunDescription
from nlp_ssl.training.run_config import check_not_current_directory

logger = logging.getLogger("nlp_ssl.text.glue_harness")


@dataclass
class GlueSettings:
    """Which GLUE tasks run, from where, on which seeds, and the settings each task overrides."""

    #: A folder in the classic layout or a local copy of nyu-mll/glue, or the Hub name itself.
    data_dir: str = "glue_data"
    #: Tasks to run, in order; those missing from data_dir are skipped and listed as such.
    tasks: list[str] = field(default_factory=lambda: ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"])
    #: One run per seed; the table shows the mean (glue_results.json also the spread).
    seeds: list[int] = field(default_factory=lambda: [42])
    #: Training length in epochs over each task's training rows (null: the top-level max_steps).
    epochs: float | None = 3.0
    #: Cap on training rows per task (a seeded random subset) for quick runs.
    max_train_samples: int | None = None
    #: Few-label GLUE: k training rows per class (regression tasks: k × 2 rows, random).
    k_per_class: int | None = None
    #: Keep each fine-tuned model (else only its results, card and curves are kept).
    save_models: bool = False
    #: Per-task ``key=value`` overrides of the shared settings, e.g. ``{rte: [learning_rate=1e-4]}``.
    task_overrides: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        check_ranges(self, epochs="(0, inf)")  # 0 would still train one step per task


@dataclass
class GlueConfig(FinetuneTextConfig):
    STATUS_IN_OUTPUT_DIR = False  # each task's run keeps its own, in its folder
    glue: GlueSettings = field(default_factory=GlueSettings)


def task_config(cfg: GlueConfig, name: str, seed: int, train_rows: int, output_dir: Path) -> FinetuneTextConfig:
    """The shared settings, then what the task needs (metrics, problem type, length), then its overrides."""
    task = get_task(name)
    shared = {f.name: copy.deepcopy(getattr(cfg, f.name)) for f in dataclasses.fields(FinetuneTextConfig)}
    ft = FinetuneTextConfig(**shared)
    ft.seed, ft.output_dir = seed, str(output_dir)
    ft.data.train_file = None
    ft.finetune.problem_type = "regression" if task.regression else "single_label_classification"
    ft.finetune.metrics = list(task.metrics)
    ft.eval.metric_for_best = "loss" if task.regression else "accuracy"
    k = cfg.glue.k_per_class
    ft.data.k_per_class = None if task.regression else k
    ft.data.max_train_samples = cfg.glue.max_train_samples
    if task.regression and k:
        ft.data.max_train_samples = min(2 * k, cfg.glue.max_train_samples or 2 * k)
    if cfg.glue.epochs is not None:
        rows = train_rows if not k else (2 * k if task.regression else k * len(task.names))
        rows = min(rows, ft.data.max_train_samples or rows)
        ft.train.max_steps = max(1, math.ceil(cfg.glue.epochs * rows / ft.train.global_batch_size))
    overrides = cfg.glue.task_overrides.get(task.name, [])
    if not overrides:
        return ft
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "task.yaml"
        save_config(ft, path)
        try:
            return load_config(FinetuneTextConfig, path, overrides)
        except ConfigError as error:
            raise ConfigError(f"glue.task_overrides.{task.name}: {error}") from None


def load_glue_task(data_dir: str, name: str):
    """(splits, description of the source) from a local folder, or from the Hub by name."""
    task = get_task(name)
    if Path(data_dir).is_dir():
        return load_task(data_dir, task)
    if data_dir == HUB_NAME or (data_dir.count("/") == 1 and not Path(data_dir).exists()):
        return load_hub_task(data_dir, task)
    raise DataError(f"glue.data_dir {data_dir}: no such folder (and not a Hub dataset name like {HUB_NAME})")


def run_glue(cfg: GlueConfig) -> dict:
    """Every task × seed through finetune(); glue_results.json and glue_results.md in output_dir."""
    settings = cfg.glue
    tasks = [get_task(n) for n in settings.tasks]  # unknown names fail before any training
    unknown = sorted(set(settings.task_overrides) - {t.name for t in tasks})
    if unknown:
        raise ConfigError(f"glue.task_overrides: {unknown} are not among glue.tasks {[t.name for t in tasks]}")
    if not settings.seeds:
        raise ConfigError("glue.seeds is empty")
    check_not_current_directory(cfg.output_dir, cfg.write_into_cwd)  # each task's run checks its own folder
    out = Path(cfg.output_dir)
    local = Path(settings.data_dir).is_dir()
    if not local:
        apply_timeout(cfg.hub.timeout)  # the tasks are read from the Hub before any run sets the timeout up
    skipped, per_task, runs = {}, {}, {}
    for task in tasks:
        if local and find_layout(settings.data_dir, task) is None:
            skipped[task.name] = missing_reason(settings.data_dir, task)
            logger.info("skipping %s: %s", task.name, skipped[task.name])
            continue
        splits, where = load_glue_task(settings.data_dir, task.name)
        seeds = {}
        for seed in settings.seeds:
            run_dir = out / task.name / f"seed{seed}"
            ft = task_config(cfg, task.name, seed, len(splits["pool"]), run_dir)
            description = RunDescription(
                datasets=[HUB_NAME], eval_dataset={"name": f"GLUE {task.folder}", "type": HUB_NAME, "config": task.name,
                                                   "split": task.devs[0][2]},
                eval_metrics={f"{_prefix(i, dev)}{m}": m for i, (dev, _, _) in enumerate(task.devs) for m in task.metrics},
            )
            results = finetune(ft, (splits, None if task.regression else list(task.names), where), description)
            seeds[seed] = {result_key(m, dev): results[f"{_prefix(i, dev)}{m}"] for i, (dev, _, _) in enumerate(task.devs)
                           for m in task.metrics}
            used = results["train_examples"]
            if not settings.save_models:
                _drop_weights(run_dir)
        runs[task.name] = seeds
        names = list(next(iter(seeds.values())))
        per_task[task.name] = {
            "metrics": {k: float(np.mean([s[k] for s in seeds.values()])) for k in names},
            "std": {k: float(np.std([s[k] for s in seeds.values()])) for k in names},
            "train_examples": used,
            "dev_examples": len(splits["test"]),
            "source": where,
        }
        per_task[task.name]["score"] = task_score(per_task[task.name]["metrics"])
    if not per_task:
        why = "; ".join(skipped.values())
        raise DataError(f"glue.data_dir {settings.data_dir}: none of the tasks {settings.tasks} is there ({why})")
    summary = {
        "tasks": per_task,
        "average": glue_average({k: v["score"] for k, v in per_task.items()}),
        "average_over": list(per_task),
        "skipped": skipped,
        "seeds": list(settings.seeds),
        "runs": {t: {str(s): v for s, v in r.items()} for t, r in runs.items()},
        "model": (cfg.model.name_or_path if cfg.model.load_weights else f"{cfg.model.name_or_path}'s architecture, fresh weights")
        if cfg.model.name_or_path else f"{cfg.model.arch} {cfg.model.size} from scratch",
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "glue_results.json", summary)
    atomic.write_text(out / "glue_results.md", results_table(summary))
    return summary


def _prefix(i: int, dev: str = "") -> str:
    """The result key prefix finetune() gives dev set i (``test_``, then ``test_<dev>_``)."""
    if i == 0:
        return "test_"
    return f"test_{dev}_" if dev else f"test_{i}_"


def _drop_weights(run_dir: Path) -> None:
    for item in list(run_dir.glob("*.safetensors")) + [run_dir / "best_model", run_dir / "checkpoints"]:
        if item.is_dir():
            shutil.rmtree(item)
        elif item.exists():
            item.unlink()


def results_table(summary: dict) -> str:
    """The markdown table: one row per task (scores × 100, as the leaderboard shows them), the average."""
    lines = [f"GLUE dev results for {summary['model']} (seeds {summary['seeds']}; × 100)", "",
             "| task | metrics | score | training rows |", "| --- | --- | --- | --- |"]
    for name, task in summary["tasks"].items():
        shown = ", ".join(f"{k} {100 * v:.1f}" + (f" ± {100 * task['std'][k]:.1f}" if len(summary["seeds"]) > 1 else "")
                          for k, v in task["metrics"].items())
        lines.append(f"| {get_task(name).folder} | {shown} | {100 * task['score']:.1f} | {task['train_examples']} |")
    for name, why in summary["skipped"].items():
        lines.append(f"| {get_task(name).folder} | skipped: {why} | | |")
    lines.append(f"| **average** ({len(summary['average_over'])} tasks) | | **{100 * summary['average']:.1f}** | |")
    return "\n".join(lines) + "\n"
