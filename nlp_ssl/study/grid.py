"""What every study shares (its keys, its methods), and the plain plan: every method × k × seed, once.

A study page (``recipes/study_*.py``) names its fine-tuning recipe and its methods in one table: a
fine-tuned method is a list of recipe arguments (which checkpoint to start from); a linear baseline
is a function of the recipe's parsed config, so it fits on exactly the rows the fine-tuning runs of
the same k and seed train on. The runs are :mod:`nlp_ssl.study.runs`', the files
:mod:`nlp_ssl.study.report`'s; a plan only says which cells run, in what order, and what their
records hold. The vision study's plan, with a rate grid and learning-speed runs, is
:mod:`nlp_ssl.study.protocol`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from nlp_ssl.config import check_ranges, save_config, to_dict
from nlp_ssl.errors import ConfigError
from nlp_ssl.study import plots, report
from nlp_ssl.study.runs import HISTORY_FILE, Job, read_history, read_results, run_folder, run_jobs, summarise_history
from nlp_ssl.training.run_config import check_not_current_directory, check_output_dir_named

#: What a fine-tuning run's all_results.json contributes to its record.
RESULT_KEYS = ("test_accuracy", "test_macro_f1", "last_test_accuracy", "best_step", "steps", "train_runtime_s")
#: Metrics averaged over seeds in ``summary``.
SUMMARISED = ("test_accuracy", "test_macro_f1", "last_test_accuracy", "best_val_accuracy", "last_val_accuracy", "best_step")


@dataclass
class StudyConfig:
    """The keys every study shares; a study page adds its checkpoints."""

    output_dir: str = "results/study"
    #: Let ``output_dir`` be the current directory.
    write_into_cwd: bool = False
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
    #: Fine-tuning runs at once (subprocesses, each with cores / workers threads unless OMP_NUM_THREADS is set).
    workers: int = 1
    #: Finished runs of a method read from another study's folder instead of running again, e.g.
    #: ``{scratch: results/vision_study}`` for a check that changes only the other methods.
    runs_from: dict[str, str] = field(default_factory=dict)
    #: Rebuild results.* and the plots from the runs on disk; run nothing.
    report_only: bool = False

    def __post_init__(self):
        check_output_dir_named(self.output_dir)
        check_not_current_directory(self.output_dir, self.write_into_cwd)
        if not self.k_per_class or not self.seeds:
            raise ConfigError("k_per_class and seeds must each list at least one value")
        bad = [k for k in self.k_per_class if k <= 0]
        if bad:
            raise ConfigError(f"k_per_class: {bad[0]} is not a positive number of labels per class")
        check_ranges(self, workers="(0, inf)")
        check_arguments("finetune_args", self.finetune_args)
        for method, args in self.method_overrides.items():
            check_arguments(f"method_overrides.{method}", args)
        for method, folder in self.runs_from.items():
            if not isinstance(folder, str) or not Path(folder).is_dir():
                raise ConfigError(f"runs_from.{method}: {folder!r} is not a study folder")

    def k_arguments(self, k: int) -> list[str]:
        """Fine-tuning arguments of one k, after ``finetune_args`` (none here; the protocol has ``k_args``)."""
        return []


def runnable(cfg: StudyConfig) -> StudyConfig:
    """The config a report describes: the study as it runs, whether the report was rebuilt with ``report_only`` or not."""
    return replace(cfg, report_only=False)


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
    #: The methods, by the names ``methods`` lists: one entry each.
    methods: dict[str, Method]
    #: Gains are reported over this method, seed by seed.
    reference: str = "scratch"
    #: Extra sections of results.md (heading -> lines), e.g. how the checkpoints were pretrained.
    sections: dict[str, list[str]] = field(default_factory=dict)
    #: Extra fields of results.json.
    extra: dict = field(default_factory=dict)
    #: The command that made the study (recorded in its result files): ``provenance.command_line``.
    command: str = ""


def check_methods(cfg: StudyConfig, study: Study) -> None:
    known = list(study.methods)
    if not cfg.methods:
        raise ConfigError(f"methods: list at least one of {known}")
    for key, names in (("methods", cfg.methods), ("methods", cfg.method_overrides), ("runs_from", cfg.runs_from)):
        for name in names:
            if name not in study.methods:
                raise ConfigError(f"{key}: {name!r} is not one of {known}")


# ------------------------------------------------------------------------------ the plain plan


def grid_jobs(cfg: StudyConfig, k: int) -> list[Job]:
    return [Job(method, k, seed) for seed in cfg.seeds for method in cfg.methods]


def record(cfg: StudyConfig, study: Study, job: Job) -> dict | None:
    """What the report needs of one cell, read from its folder; None when it has not finished."""
    folder = run_folder(cfg, job)
    results = read_results(folder)
    if results is None:
        return None
    rec = {**job.identity(),
           **{key: results[key] for key in RESULT_KEYS if key in results},
           "test_examples": results.get("test_examples", results.get("test_images"))}
    if study.methods[job.method].baseline is None:
        rec.update(summarise_history(read_history(folder)))
    return rec


def build(cfg: StudyConfig, study: Study, records: list[dict]) -> dict:
    """results.json: every run, mean ± std over seeds, and per-seed gains over the reference."""
    return {
        "title": study.title,
        "config": to_dict(runnable(cfg)),
        "reference": study.reference,
        "labels": {m: spec.label for m, spec in study.methods.items() if m in cfg.methods},
        "runs": records,
        "summary": report.summarise(records, {key: key for key in SUMMARISED}),
        "gains": report.gains(records, study.reference, "test_accuracy"),
        **study.extra,
    }


def write_report(cfg: StudyConfig, study: Study) -> dict:
    """results.json, results.md, accuracy_vs_labels.png and curves/ from the finished cells on disk."""
    out = Path(cfg.output_dir)
    jobs = [job for k in cfg.k_per_class for job in grid_jobs(cfg, k)]
    records = [r for r in (record(cfg, study, job) for job in jobs) if r]
    results = report.write(out, build(cfg, study, records), report.grid_markdown, cfg, study)
    labels = {m: study.methods[m].label for m in cfg.methods}
    plots.plot_accuracy(results["summary"], labels, cfg.k_per_class, out / "accuracy_vs_labels.png", study.title)
    by_k: dict = {}
    for rec in records:
        folder = run_folder(cfg, Job(rec["method"], rec["k_per_class"], rec["seed"]))
        history = read_history(folder)
        if history:
            by_k.setdefault(rec["k_per_class"], {})[rec["run"]] = history
            png = out / "curves" / f"{rec['run']}.png"
            if not png.is_file() or png.stat().st_mtime < (folder / HISTORY_FILE).stat().st_mtime:  # drawn once per run
                title = f"{study.methods[rec['method']].label}, k={rec['k_per_class']}, seed {rec['seed']}"
                plots.plot_curves({rec["run"]: history}, png, title)
    for k, runs in by_k.items():
        plots.plot_curves(runs, out / "curves" / f"k{k}.png", f"{study.title}: fine-tuning with {k} labels per class")
    return results


def run_study(cfg: StudyConfig, study: Study) -> dict:
    """Run (or reuse) every cell, k by k, and write the report after each k; ``report_only``: just the report."""
    check_methods(cfg, study)
    out = Path(cfg.output_dir)
    (out / "curves").mkdir(parents=True, exist_ok=True)
    # The config beside the report is the study it describes, runnable as it stands.
    save_config(runnable(cfg), out / "study_config.yaml")
    results = None
    for k in [] if cfg.report_only else cfg.k_per_class:
        run_jobs(cfg, study, grid_jobs(cfg, k))
        results = write_report(cfg, study)
    return results if results is not None else write_report(cfg, study)
