"""The study grid: methods × labels per class × seeds, run in that order and reported after each run.

A study page (``recipes/study_*.py``) names its fine-tuning recipe and its methods: a fine-tuned
method is a list of recipe arguments (which checkpoint to start from); a linear baseline is a
function of the recipe's parsed config, so it fits on exactly the rows the fine-tuning runs of the
same k and seed train on. Everything else (keys, run names, result files) is the same for every
study.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.atomic import write_json, write_text
from nlp_ssl.config import parse_config, save_config
from nlp_ssl.errors import ConfigError
from nlp_ssl.study import plots, report
from nlp_ssl.study.runs import read_history, recipe_yaml, run_recipe, summarise_history

#: What a fine-tuning run's all_results.json contributes to its record.
RESULT_KEYS = ("test_accuracy", "test_macro_f1", "last_test_accuracy", "best_step", "steps", "train_runtime_s")


@dataclass
class StudyConfig:
    """The keys every study shares; a study page adds its checkpoints."""

    output_dir: str = "results/study"
    #: Labelled training examples per class, one point of the curve each.
    k_per_class: list[int] = field(default_factory=lambda: [8, 32])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=list)
    #: ``key=value`` arguments of the fine-tuning recipe, for every run (and the baselines' data).
    finetune_args: list[str] = field(default_factory=list)
    #: Arguments for one method only, after ``finetune_args``: e.g. ``{mim: [learning_rate=2e-4]}``.
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    #: Reuse finished runs and continue unfinished ones found in output_dir; false: rerun from scratch.
    reuse: bool = True

    def __post_init__(self):
        if not self.k_per_class or not self.seeds:
            raise ConfigError("k_per_class and seeds must each list at least one value")
        bad = [k for k in self.k_per_class if k <= 0]
        if bad:
            raise ConfigError(f"k_per_class: {bad[0]} is not a positive number of labels per class")
        check_arguments("finetune_args", self.finetune_args)
        for method, args in self.method_overrides.items():
            check_arguments(f"method_overrides.{method}", args)


def check_arguments(name: str, args) -> None:
    if not isinstance(args, list) or any(not isinstance(a, str) or "=" not in a for a in args):
        raise ConfigError(f"{name}: {args!r} is not a list of key=value")


@dataclass
class Method:
    #: How tables and plots name the method.
    label: str
    #: Fine-tuning recipe arguments of this method (its starting point), after ``finetune_args``.
    args: list[str] = field(default_factory=list)
    #: A linear baseline instead of a fine-tuning run: the recipe's config (k and seed set) -> test scores.
    baseline: Callable[[object], dict] | None = None


@dataclass
class Study:
    title: str
    #: The fine-tuning recipe every fine-tuned method runs, e.g. ``finetune_vision``.
    recipe: str
    #: Its config class: the baselines get the config a run of the same k and seed would read.
    config_class: type
    methods: dict[str, Method]
    #: Gains are reported over this method, seed by seed.
    reference: str = "scratch"
    #: Extra sections of results.md (heading -> lines), e.g. how the checkpoints were pretrained.
    sections: dict[str, list[str]] = field(default_factory=dict)
    #: Extra fields of results.json.
    extra: dict = field(default_factory=dict)


def run_name(method: str, k: int, seed: int) -> str:
    return f"{method}_k{k}_s{seed}"


def finetune_args(cfg: StudyConfig, study: Study, method: str, k: int, seed: int) -> list[str]:
    return [*cfg.finetune_args, *study.methods[method].args, *cfg.method_overrides.get(method, []),
            f"data.k_per_class={k}", f"seed={seed}"]


def check_methods(cfg: StudyConfig, study: Study) -> None:
    known = list(study.methods)
    if not cfg.methods:
        raise ConfigError(f"methods: list at least one of {known}")
    for name in (*cfg.methods, *cfg.method_overrides):
        if name not in study.methods:
            raise ConfigError(f"methods: {name!r} is not one of {known}")


def run_one(cfg: StudyConfig, study: Study, method: str, k: int, seed: int) -> tuple[dict, list[dict]]:
    """(record, training history) of one cell of the grid."""
    args = finetune_args(cfg, study, method, k, seed)
    spec = study.methods[method]
    if spec.baseline is not None:
        start = time.perf_counter()
        scores = spec.baseline(parse_config(study.config_class, args, default_yaml=recipe_yaml(study.recipe)))
        return {**scores, "train_runtime_s": time.perf_counter() - start}, []
    out = Path(cfg.output_dir) / "runs" / run_name(method, k, seed)
    results = run_recipe(study.recipe, args, out, cfg.reuse)
    history = read_history(out)
    record = {key: results[key] for key in RESULT_KEYS if key in results}
    record["test_examples"] = results.get("test_examples", results.get("test_images"))
    return {**record, **summarise_history(history)}, history


def run_study(cfg: StudyConfig, study: Study) -> dict:
    """Run (or reuse) every cell; write results.json and results.md after each, the plots at the end."""
    check_methods(cfg, study)
    out = Path(cfg.output_dir)
    (out / "curves").mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "study_config.yaml")
    records, histories = [], {}
    for k in cfg.k_per_class:
        for seed in cfg.seeds:
            for method in cfg.methods:
                name = run_name(method, k, seed)
                print(f"[study] {name}", flush=True)
                record, history = run_one(cfg, study, method, k, seed)
                records.append({"run": name, "method": method, "k_per_class": k, "seed": seed, **record})
                print(f"[study] {name}: test accuracy {100 * record['test_accuracy']:.2f}%", flush=True)
                if history:
                    histories.setdefault(k, {})[name] = history
                    title = f"{study.methods[method].label}, k={k}, seed {seed}"
                    plots.plot_curves({name: history}, out / "curves" / f"{name}.png", title)
                results = report.build(cfg, study, records)
                write_json(out / "results.json", results)
                write_text(out / "results.md", report.markdown(cfg, study, results))
    labels = {m: study.methods[m].label for m in cfg.methods}
    plots.plot_accuracy(results["summary"], labels, cfg.k_per_class, out / "accuracy_vs_labels.png", study.title)
    for k, runs in histories.items():
        plots.plot_curves(runs, out / "curves" / f"k{k}.png", f"{study.title}: fine-tuning with {k} labels per class")
    return results
