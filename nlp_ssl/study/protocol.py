"""The rate-grid plan (the vision study's protocol): paired seeds, equal fixed budgets, a learning-rate grid
per initialisation chosen on validation, a flattening check, baselines on the same split, and a
learning-speed curve with a compute-matched point.

What runs, in order (every cell a run folder of :mod:`nlp_ssl.study.runs`, reused when finished and
continued when not):

1. for each k: every method on every seed (the same labelled draw for every method of a seed), each
   fine-tuned method at every rate of ``learning_rates``; the rate with the best mean validation
   accuracy over the seeds is that method's at that k. Methods in ``lr_from`` (the auxiliary-loss
   rows) then run once per seed at the rate chosen for the method they name. Every method of one k
   gets the same number of steps (``finetune_args`` and ``k_args``, fixed before anything runs).
2. at ``speed_k``: ``speed_methods`` again at their chosen rate with the shorter budgets
   ``speed_steps`` (test accuracy against fine-tuning steps), and scratch once more with the
   ``compute_matched`` method's pretraining time added as extra fine-tuning steps.

The report is a function of the run folders alone, so ``report_only=true`` rebuilds it without
running anything; its tables are :mod:`nlp_ssl.study.report`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nlp_ssl.atomic import write_json
from nlp_ssl.config import check_ranges, parse_config, save_config, to_dict
from nlp_ssl.errors import ConfigError
from nlp_ssl.study import plots, report
from nlp_ssl.study.grid import Study, StudyConfig, check_arguments, check_methods, runnable
from nlp_ssl.study.report import mean_std
from nlp_ssl.study.runs import Job, read_history, read_results, recipe_yaml, run_folder, run_jobs, summarise_history

COMPUTE_MATCHED_FILE = "compute_matched.json"


@dataclass
class ProtocolConfig(StudyConfig):
    output_dir: str = "results/vision_study"
    k_per_class: list[int] = field(default_factory=lambda: [1, 5, 10, 100])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    #: Seeds of one k instead of ``seeds``, e.g. ``{100: [0, 1, 2]}``.
    k_seeds: dict[int, list[int]] = field(default_factory=dict)
    #: Fine-tuning arguments of one k, after ``finetune_args``: its step budget and batch size.
    k_args: dict[int, list[str]] = field(default_factory=dict)
    #: The grid every fine-tuned method searches, per k, on validation.
    learning_rates: list[float] = field(default_factory=lambda: [2e-4, 5e-4, 1e-3])
    #: The seeds that search the grid (null: every seed); the others run once, at the rate those chose.
    lr_seeds: list[int] | None = None
    #: Methods that take the rate chosen for another method instead of searching, e.g. {scratch_aux: scratch}.
    lr_from: dict[str, str] = field(default_factory=dict)
    #: The validation accuracy that picks the rate (mean over seeds): the last checkpoint's or the best one's.
    select_on: Literal["last", "best"] = "last"
    #: The test accuracy of the headline tables: the last checkpoint's or the best-on-validation one's.
    headline: Literal["last", "best"] = "last"
    #: Flattening check: the mean training loss of the last ``flat_window`` of the steps may be below that
    #: of the window before by at most ``flat_tolerance`` of it (or 0.01 absolute, for losses near 0).
    flat_window: float = 0.1
    flat_tolerance: float = 0.05
    #: Learning speed: at this k, ``speed_methods`` are also fine-tuned for each of ``speed_steps``.
    speed_k: int = 100
    speed_steps: list[int] = field(default_factory=list)
    speed_methods: list[str] = field(default_factory=lambda: ["scratch", "rotation", "mim"])
    #: The method whose pretraining time scratch gets as extra fine-tuning steps at speed_k (null: none).
    compute_matched: str | None = None
    #: What the study must show, each ``{method, over, k, gain, seeds}``: the mean paired gain of ``method``
    #: (or ``best``, the best fine-tuned method) over ``over`` at k, in points, on ≥ ``seeds`` seeds (default 5),
    #: every one positive, e.g. ``{method: rotation, over: scratch, k: 10, gain: 5}``.
    targets: list[dict] = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        check_ranges(self, flat_window="(0, 0.5]", flat_tolerance="[0, inf)", speed_k="(0, inf)")
        self.k_seeds = {_k_key("k_seeds", k): list(v) for k, v in self.k_seeds.items()}
        self.k_args = {_k_key("k_args", k): v for k, v in self.k_args.items()}
        for k, args in self.k_args.items():
            check_arguments(f"k_args.{k}", args)
        if not self.learning_rates or any(not isinstance(r, (int, float)) or r <= 0 for r in self.learning_rates):
            raise ConfigError(f"learning_rates: {self.learning_rates!r} must list positive rates")
        self.learning_rates = sorted(float(r) for r in self.learning_rates)
        bad = [s for s in self.speed_steps if not isinstance(s, int) or s <= 0]
        if bad:
            raise ConfigError(f"speed_steps: {bad[0]!r} is not a positive number of steps")

    def k_arguments(self, k: int) -> list[str]:
        return self.k_args.get(k, [])

    def seeds_for(self, k: int) -> list[int]:
        return self.k_seeds.get(k, self.seeds)

    def search_seeds(self, k: int) -> list[int]:
        """The seeds of k that fine-tune at every rate of the grid and choose the rate."""
        return [s for s in self.seeds_for(k) if self.lr_seeds is None or s in self.lr_seeds]


def _k_key(name: str, key) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: key {key!r} is not a number of labels per class") from None


@dataclass
class ProtocolStudy(Study):
    #: Seconds each pretrained method's checkpoint took to pretrain (for the compute-matched point).
    pretrain_seconds: dict[str, float] = field(default_factory=dict)
    #: Gains are reported over each of these methods, seed by seed.
    references: tuple[str, ...] = ("scratch", "pixels_logreg")


def main_steps(cfg: ProtocolConfig, study: ProtocolStudy, k: int) -> int:
    """The fine-tuning budget every method gets at k, read from the arguments as the recipe reads them."""
    args = [*cfg.finetune_args, *cfg.k_arguments(k)]
    return parse_config(study.config_class, args, default_yaml=recipe_yaml(study.recipe)).train.max_steps


# ------------------------------------------------------------------------------------ records


def flattening(history: list[dict], window: float, tolerance: float) -> dict:
    """Has the training loss flattened? The mean of the logged training losses in the last ``window`` of
    the steps against the window before; flattened when it fell by at most ``tolerance`` of the earlier
    mean, or by at most 0.01 (a loss near 0 stays flat in absolute terms). A cosine schedule slows the
    last steps whether or not the model has finished learning, so the mean over the window that ends at
    half the steps (``loss_mid``) is kept too, for the report to show the whole second half."""
    points = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
    if not points:
        return {"flattened": None}
    steps = max(s for s, _ in points)
    width = max(1, round(window * steps))

    def mean_over(end: float) -> float | None:
        values = [v for s, v in points if end - width < s <= end]
        return sum(values) / len(values) if values else None

    last_mean, before_mean, mid = mean_over(steps), mean_over(steps - width), mean_over(steps / 2)
    if last_mean is None or before_mean is None:
        return {"flattened": None}
    drop = before_mean - last_mean
    return {"flattened": drop <= max(tolerance * before_mean, 0.01), "loss_mid": mid, "loss_before": before_mean,
            "loss_last": last_mean, "relative_drop": drop / before_mean if before_mean else 0.0}


def record(cfg: ProtocolConfig, study: ProtocolStudy, job: Job, main: int) -> dict | None:
    """What the report needs of one cell, read from its folder; None when it has not finished."""
    folder = run_folder(cfg, job)
    results = read_results(folder)
    if results is None:
        return None
    rec = {**job.identity(),
           "learning_rate": job.learning_rate, "steps": job.steps or main, "budget": "speed" if job.steps else "main",
           "test_examples": results.get("test_examples", results.get("test_images")),
           "train_runtime_s": results.get("train_runtime_s")}
    if study.methods[job.method].baseline is not None:
        accuracy = results["test_accuracy"]
        return {**rec, "baseline": True, "test_accuracy_last": accuracy, "test_accuracy_best": accuracy,
                "test_macro_f1": results.get("test_macro_f1")}
    best_and_last = "last_test_accuracy" in results  # load_best_at_end: both models were scored
    history = read_history(folder)
    summary = summarise_history(history)
    return {
        **rec, "baseline": False,
        "test_accuracy_last": results["last_test_accuracy"] if best_and_last else results["test_accuracy"],
        "test_accuracy_best": results["test_accuracy"] if best_and_last else None,
        "test_macro_f1": results.get("last_test_macro_f1" if best_and_last else "test_macro_f1"),
        "val_accuracy_last": summary.get("last_val_accuracy"), "val_accuracy_best": summary.get("best_val_accuracy"),
        "best_step": results.get("best_step"), "aux_task": results.get("aux_task"),
        "train_tokens_per_s": results.get("train_tokens_per_s"), "train_mfu": results.get("train_mfu"),
        "flattening": flattening(history, cfg.flat_window, cfg.flat_tolerance),
    }


def choose_rates(cfg: ProtocolConfig, study: ProtocolStudy, records: list[dict]) -> dict:
    """``{method: {k: {"rate", "by_rate": {rate: mean validation accuracy}, "from"?}}}`` for the fine-tuned
    methods: the grid's best by mean validation accuracy over the searching seeds (ties: the lower rate)."""
    key = f"val_accuracy_{cfg.select_on}"
    chosen: dict = {}
    for method in cfg.methods:
        if study.methods[method].baseline is not None or method in cfg.lr_from:
            continue
        for k in cfg.k_per_class:
            by_rate, searching = {}, cfg.search_seeds(k)
            for rate in cfg.learning_rates:
                values = [r[key] for r in records if r["method"] == method and r["k_per_class"] == k
                          and r["budget"] == "main" and r["learning_rate"] == rate and r.get(key) is not None
                          and r["seed"] in searching]
                if values:
                    by_rate[rate] = sum(values) / len(values)
            if by_rate:
                best = max(by_rate, key=lambda rate: (by_rate[rate], -rate))
                chosen.setdefault(method, {})[k] = {"rate": best, "by_rate": by_rate}
    for method, source in cfg.lr_from.items():
        for k, cell in chosen.get(source, {}).items():
            if method in cfg.methods:
                chosen.setdefault(method, {})[k] = {"rate": cell["rate"], "from": source}
    return chosen


# ------------------------------------------------------------------------------------------ jobs


def grid_jobs(cfg: ProtocolConfig, study: ProtocolStudy, k: int, chosen: dict | None) -> list[Job]:
    """The main-budget cells of k: the baselines and the searching seeds' grid (``chosen`` None), or every
    other cell at its chosen rate (the ``lr_from`` methods, and the seeds that did not search)."""
    jobs = []
    searching = cfg.search_seeds(k)
    for seed in cfg.seeds_for(k):
        for method in cfg.methods:
            if study.methods[method].baseline is not None:
                if chosen is None:
                    jobs.append(Job(method, k, seed))
            elif chosen is None:
                if method not in cfg.lr_from and seed in searching:
                    jobs += [Job(method, k, seed, rate) for rate in cfg.learning_rates]
            elif method in cfg.lr_from or seed not in searching:
                rate = chosen.get(method, {}).get(k, {}).get("rate")
                if rate is not None:
                    jobs.append(Job(method, k, seed, rate))
    return jobs


def speed_jobs(cfg: ProtocolConfig, chosen: dict, main: int, matched: dict | None) -> list[Job]:
    k = cfg.speed_k
    jobs = []
    for method in cfg.speed_methods:
        rate = chosen.get(method, {}).get(k, {}).get("rate")
        if rate is None:
            continue
        jobs += [Job(method, k, seed, rate, steps) for seed in cfg.seeds_for(k) for steps in cfg.speed_steps
                 if steps != main]
    if matched and matched.get("extra_steps", 0) > 0:
        rate = chosen.get("scratch", {}).get(k, {}).get("rate")
        if rate is not None:
            jobs += [Job("scratch", k, seed, rate, matched["steps"]) for seed in cfg.seeds_for(k)]
    return list(dict.fromkeys(jobs))  # a compute-matched budget may also be one of speed_steps


def all_jobs(cfg: ProtocolConfig, study: ProtocolStudy, chosen: dict, matched: dict | None) -> list[Job]:
    jobs = [job for k in cfg.k_per_class for job in grid_jobs(cfg, study, k, None) + grid_jobs(cfg, study, k, chosen)]
    if cfg.speed_k in cfg.k_per_class:
        jobs += speed_jobs(cfg, chosen, main_steps(cfg, study, cfg.speed_k), matched)
    return jobs


def compute_matched_steps(cfg: ProtocolConfig, study: ProtocolStudy, chosen: dict, records: list[dict]) -> dict | None:
    """Scratch's extra steps worth the ``compute_matched`` method's pretraining time, from scratch's own
    seconds per step (wall clock, evaluation included, like the pretraining's) at speed_k."""
    method, k = cfg.compute_matched, cfg.speed_k
    if not method:
        return None
    seconds = study.pretrain_seconds.get(method)
    rate = chosen.get("scratch", {}).get(k, {}).get("rate")
    runs = [r for r in records if r["method"] == "scratch" and r["k_per_class"] == k and r["budget"] == "main"
            and r["learning_rate"] == rate and r.get("train_runtime_s")]
    if not seconds or not runs:
        return {"method": method, "steps": None,
                "why_not": "no pretraining time known" if not seconds else "no scratch run to time"}
    per_step = sum(r["train_runtime_s"] / r["steps"] for r in runs) / len(runs)
    extra = round(seconds / per_step)
    return {"method": method, "pretrain_seconds": seconds, "scratch_seconds_per_step": per_step,
            "main_steps": runs[0]["steps"], "extra_steps": extra, "steps": runs[0]["steps"] + extra}


def collect(cfg: ProtocolConfig, study: ProtocolStudy) -> tuple[list[dict], dict, dict | None]:
    """(every finished cell's record, the chosen rates, the compute-matched decision) from the run folders."""
    mains = {k: main_steps(cfg, study, k) for k in cfg.k_per_class}
    grid = [job for k in cfg.k_per_class for job in grid_jobs(cfg, study, k, None)]
    records = [r for r in (record(cfg, study, job, mains[job.k]) for job in grid) if r]
    chosen = choose_rates(cfg, study, records)
    path = Path(cfg.output_dir) / COMPUTE_MATCHED_FILE
    matched = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    seen = {r["run"] for r in records}
    for job in all_jobs(cfg, study, chosen, matched):
        if job.name not in seen:
            rec = record(cfg, study, job, mains[job.k])
            if rec:
                records.append(rec)
                seen.add(job.name)
    return records, chosen, matched


def pending_methods(cfg: ProtocolConfig, study: ProtocolStudy) -> set[str]:
    """The methods with a cell still to run, of those known now (the chosen-rate cells once their grid is done)."""
    records, chosen, matched = collect(cfg, study)
    done = {r["run"] for r in records}
    return {job.method for job in all_jobs(cfg, study, chosen, matched) if job.name not in done}


def check_protocol(cfg: ProtocolConfig, study: ProtocolStudy) -> None:
    check_methods(cfg, study)
    for method, source in cfg.lr_from.items():
        for name in (method, source):
            if name not in study.methods:
                raise ConfigError(f"lr_from: {name!r} is not one of {list(study.methods)}")
        if source in cfg.lr_from or study.methods[source].baseline is not None:
            raise ConfigError(f"lr_from.{method}: {source!r} must be a fine-tuned method that searches the grid")
        if method in cfg.methods and source not in cfg.methods:
            raise ConfigError(f"lr_from.{method}: {source!r} must be in methods too (its rate is chosen there)")
    speed = cfg.speed_k in cfg.k_per_class and (cfg.speed_steps or cfg.compute_matched)
    for method in cfg.speed_methods:
        if method not in study.methods or study.methods[method].baseline is not None:
            raise ConfigError(f"speed_methods: {method!r} is not a fine-tuned method of {list(study.methods)}")
        if speed and method not in cfg.methods:
            raise ConfigError(f"speed_methods: {method!r} must be in methods too (its rate is chosen there)")
    if cfg.compute_matched:
        if cfg.compute_matched not in study.methods:
            raise ConfigError(f"compute_matched: {cfg.compute_matched!r} is not one of {list(study.methods)}")
        if speed and "scratch" not in cfg.methods:
            raise ConfigError("compute_matched: the compute-matched run is scratch's, so methods must list scratch")
    for k in cfg.k_per_class:  # every budget parses before anything runs
        main_steps(cfg, study, k)
        if not cfg.search_seeds(k):
            raise ConfigError(f"lr_seeds: {cfg.lr_seeds!r} holds none of the seeds of k={k} {cfg.seeds_for(k)}")


def run_protocol(cfg: ProtocolConfig, study: ProtocolStudy) -> dict:
    """Run (or reuse) every cell in protocol order, writing the report after each k and at the end;
    ``report_only``: just the report, from what is on disk."""
    check_protocol(cfg, study)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The config beside the report is the study it describes, runnable as it stands.
    save_config(runnable(cfg), out / "study_config.yaml")
    if not cfg.report_only:
        for k in cfg.k_per_class:
            run_jobs(cfg, study, grid_jobs(cfg, study, k, None))
            _, chosen, _ = collect(cfg, study)
            run_jobs(cfg, study, grid_jobs(cfg, study, k, chosen))
            write_report(cfg, study, *collect(cfg, study))
        if cfg.speed_k in cfg.k_per_class and (cfg.speed_steps or cfg.compute_matched):
            records, chosen, matched = collect(cfg, study)
            if matched is None and cfg.compute_matched:
                matched = compute_matched_steps(cfg, study, chosen, records)
                write_json(out / COMPUTE_MATCHED_FILE, matched)
            run_jobs(cfg, study, speed_jobs(cfg, chosen, main_steps(cfg, study, cfg.speed_k), matched))
    return write_report(cfg, study, *collect(cfg, study))


# ------------------------------------------------------------------------------------ results


def chosen_runs(records: list[dict], chosen: dict, method: str, k: int) -> list[dict]:
    """The main-budget runs of ``method`` at k with its chosen rate (a baseline: its runs), in seed order."""
    rate = chosen.get(method, {}).get(k, {}).get("rate")
    return sorted((r for r in records if r["method"] == method and r["k_per_class"] == k and r["budget"] == "main"
                   and (r["baseline"] or r["learning_rate"] == rate)), key=lambda r: r["seed"])


def summary(cfg: ProtocolConfig, records: list[dict], chosen: dict) -> dict:
    """Per method and k: the chosen rate, the seeds, and the last, best and headline test accuracy over them."""
    runs = [r for m in cfg.methods for k in cfg.k_per_class for r in chosen_runs(records, chosen, m, k)]
    cells = report.summarise(runs, {"last": "test_accuracy_last", "best": "test_accuracy_best"})
    out: dict = {}
    for method, by_k in cells.items():
        for k, cell in by_k.items():
            seeds = [r["seed"] for r in chosen_runs(records, chosen, method, int(k))]
            cell = {"rate": chosen.get(method, {}).get(int(k), {}).get("rate"), "seeds": seeds, **cell}
            if cfg.headline in cell:
                cell["headline"] = cell[cfg.headline]
            out.setdefault(method, {})[k] = cell
    return out


def flattening_summary(cfg: ProtocolConfig, records: list[dict], chosen: dict) -> dict:
    out: dict = {}
    for method in cfg.methods:
        for k in cfg.k_per_class:
            runs = [r for r in chosen_runs(records, chosen, method, k) if not r["baseline"]]
            checked = [r for r in runs if r["flattening"]["flattened"] is not None]
            if checked:
                mids = [r["flattening"]["loss_mid"] for r in checked if r["flattening"].get("loss_mid")]
                out.setdefault(method, {})[str(k)] = {
                    "flattened": sum(r["flattening"]["flattened"] for r in checked), "runs": len(checked),
                    "not_flattened": [r["run"] for r in checked if not r["flattening"]["flattened"]],
                    "loss_mid": mean_std(mids) if mids else None,
                    "loss_before": mean_std([r["flattening"]["loss_before"] for r in checked]),
                    "loss_last": mean_std([r["flattening"]["loss_last"] for r in checked]),
                }
    return out


def speed(cfg: ProtocolConfig, study: ProtocolStudy, records: list[dict], chosen: dict, matched: dict | None) -> dict | None:
    """Test accuracy against fine-tuning steps at speed_k, and the compute-matched point."""
    k = cfg.speed_k
    if k not in cfg.k_per_class or not (cfg.speed_steps or matched):
        return None
    key = f"test_accuracy_{cfg.headline}"
    main = main_steps(cfg, study, k)
    curves: dict = {}
    for method in cfg.speed_methods:
        rate = chosen.get(method, {}).get(k, {}).get("rate")
        for steps in sorted({*cfg.speed_steps, main}):
            values = [r[key] for r in records if r["method"] == method and r["k_per_class"] == k
                      and r["learning_rate"] == rate and r["steps"] == steps and r.get(key) is not None
                      and (r["budget"] == "main") == (steps == main)]
            if values:
                curves.setdefault(method, {})[str(steps)] = mean_std(values)
    result = {"k": k, "main_steps": main, "curves": curves, "compute_matched": matched}
    if matched and matched.get("steps"):
        rate = chosen.get("scratch", {}).get(k, {}).get("rate")
        values = [r[key] for r in records if r["method"] == "scratch" and r["k_per_class"] == k
                  and r["budget"] == "speed" and r["steps"] == matched["steps"] and r["learning_rate"] == rate]
        if values:
            result["compute_matched"] = {**matched, "accuracy": mean_std(values)}
    return result


def _rates_cell(cell: dict) -> dict:
    """JSON keys are strings: the rates tried, as written in the run names."""
    if "by_rate" not in cell:
        return dict(cell)
    return {**cell, "by_rate": {f"{rate:g}": value for rate, value in cell["by_rate"].items()}}


def _mean_of(records: list[dict], key: str) -> dict | None:
    values = [r[key] for r in records if r.get(key)]
    return mean_std(values) if values else None


def build(cfg: ProtocolConfig, study: ProtocolStudy, records: list[dict], chosen: dict, matched: dict | None) -> dict:
    tuned = [r for r in records if not r["baseline"]]
    headline = f"test_accuracy_{cfg.headline}"
    # Gains pair each method's chosen runs with the reference's, k by k, seed by seed.
    paired = [r for k in cfg.k_per_class for m in cfg.methods for r in chosen_runs(records, chosen, m, k)]
    return {
        "title": study.title,
        "config": to_dict(runnable(cfg)),
        "headline": cfg.headline,
        "why_headline": report.WHY_LAST if cfg.headline == "last" else report.WHY_BEST,
        "select_on": cfg.select_on,
        "steps": {str(k): main_steps(cfg, study, k) for k in cfg.k_per_class},
        "learning_rates": {m: {str(k): _rates_cell(c) for k, c in by_k.items()} for m, by_k in chosen.items()},
        "summary": summary(cfg, records, chosen),
        "gains": {reference: report.gains(paired, reference, headline) for reference in study.references},
        "flattening": flattening_summary(cfg, records, chosen),
        "speed": speed(cfg, study, records, chosen, matched),
        "throughput": {"train_patches_per_s": _mean_of(tuned, "train_tokens_per_s"), "train_mfu": _mean_of(tuned, "train_mfu")},
        "runs": records,
        **study.extra,
    }


def write_report(cfg: ProtocolConfig, study: ProtocolStudy, records: list[dict], chosen: dict, matched: dict | None) -> dict:
    """results.json, results.md, accuracy_vs_labels.png, learning_speed.png and curves/k*.png."""
    out = Path(cfg.output_dir)
    results = report.write(out, build(cfg, study, records, chosen, matched), report.protocol_markdown, cfg, study)
    labels = {m: study.methods[m].label for m in cfg.methods}
    plot_summary = {m: {k: {"test_accuracy": c["headline"]} for k, c in by_k.items() if "headline" in c}
                    for m, by_k in results["summary"].items()}
    plots.plot_accuracy(plot_summary, labels, cfg.k_per_class, out / "accuracy_vs_labels.png",
                        f"{study.title}, {cfg.headline} checkpoint")
    if results["speed"] and results["speed"]["curves"]:
        reference = results["summary"].get("pixels_logreg", {}).get(str(cfg.speed_k), {}).get("headline")
        plots.plot_speed(results["speed"], labels, out / "learning_speed.png",
                         f"Learning speed, k={cfg.speed_k} per class (mean ± std over seeds)", reference)
    (out / "curves").mkdir(exist_ok=True)
    for k in cfg.k_per_class:
        first = cfg.seeds_for(k)[0]
        histories = {r["run"]: read_history(run_folder(cfg, Job(r["method"], k, first, r["learning_rate"])))
                     for m in cfg.methods for r in chosen_runs(records, chosen, m, k)
                     if not r["baseline"] and r["seed"] == first}
        histories = {name: h for name, h in histories.items() if h}
        if histories:
            plots.plot_curves(histories, out / "curves" / f"k{k}.png", f"{study.title}: k={k}, seed {first}, chosen rates")
    return results
