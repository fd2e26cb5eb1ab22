"""The vision protocol's report: ``results.json``, ``results.md`` and the plots, from the run records alone.

Numbers are test accuracies of the rate chosen on validation for each method and k. The headline
uses one checkpoint per run, fixed in advance (``headline``: the last one by default, see
:data:`WHY_LAST`); the other is reported beside it. Gains are per seed, over scratch and over pixel
logistic regression, so every difference compares models that saw the same labelled images.
"""

from __future__ import annotations

import numpy as np

from nlp_ssl.atomic import write_json, write_text
from nlp_ssl.config import to_dict
from nlp_ssl.study import plots
from nlp_ssl.study.runs import read_history
from nlp_ssl.study.vision_protocol import VisionProtocolConfig, VisionStudy, main_steps, runs_dir

WHY_LAST = (
    "The headline uses the **last** checkpoint: every budget is fixed in advance and long enough for "
    "scratch's training loss to flatten (checked below), so the last model involves no selection, while "
    "the best-on-validation checkpoint is chosen among dozens of evaluations on a validation set of "
    "2 images per class at k ≤ 10 (20 images), which picks noise and flatters whichever run is noisiest. "
    "The learning rate, a coarser choice, is chosen on the validation accuracy averaged over the seeds that search it."
)
WHY_BEST = "The headline uses the best-on-validation checkpoint of each run (`headline=best`)."
#: The issue's targets at k=10 (points of test accuracy, mean over at least TARGET_SEEDS seeds).
TARGET_K, ROTATION_TARGET, BEST_TARGET, TARGET_SEEDS = 10, 0.05, 0.10, 5


def mean_std(values: list[float]) -> dict:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def _chosen_runs(records: list[dict], chosen: dict, method: str, k: int) -> list[dict]:
    """The main-budget runs of ``method`` at k with its chosen rate (a baseline: its runs), in seed order."""
    rate = chosen.get(method, {}).get(k, {}).get("rate")
    return sorted((r for r in records if r["method"] == method and r["k_per_class"] == k and r["budget"] == "main"
                   and (r["baseline"] or r["learning_rate"] == rate)), key=lambda r: r["seed"])


def summarise(cfg, records, chosen) -> dict:
    summary: dict = {}
    for method in cfg.methods:
        for k in cfg.k_per_class:
            runs = _chosen_runs(records, chosen, method, k)
            if not runs:
                continue
            cell = {"rate": chosen.get(method, {}).get(k, {}).get("rate"), "seeds": [r["seed"] for r in runs]}
            for which in ("last", "best"):
                values = [r[f"test_accuracy_{which}"] for r in runs if r.get(f"test_accuracy_{which}") is not None]
                if values:
                    cell[which] = mean_std(values)
            if cfg.headline in cell:
                cell["headline"] = cell[cfg.headline]
            summary.setdefault(method, {})[str(k)] = cell
    return summary


def gains(cfg, records, chosen, reference: str) -> dict:
    """Headline test accuracy minus ``reference``'s, per method, k and seed (seeds both have)."""
    key = f"test_accuracy_{cfg.headline}"
    out: dict = {}
    for k in cfg.k_per_class:
        base = {r["seed"]: r[key] for r in _chosen_runs(records, chosen, reference, k) if r.get(key) is not None}
        for method in cfg.methods:
            if method == reference:
                continue
            per_seed = {r["seed"]: r[key] - base[r["seed"]] for r in _chosen_runs(records, chosen, method, k)
                        if r["seed"] in base and r.get(key) is not None}
            if per_seed:
                values = list(per_seed.values())
                out.setdefault(method, {})[str(k)] = {
                    "per_seed": {str(s): v for s, v in sorted(per_seed.items())}, **mean_std(values),
                    "min": float(min(values)), "positive": sum(v > 0 for v in values),
                }
    return out


def flattening_summary(cfg, records, chosen) -> dict:
    out: dict = {}
    for method in cfg.methods:
        for k in cfg.k_per_class:
            runs = [r for r in _chosen_runs(records, chosen, method, k) if not r["baseline"]]
            checked = [r for r in runs if r["flattening"]["flattened"] is not None]
            if checked:
                out.setdefault(method, {})[str(k)] = {
                    "flattened": sum(r["flattening"]["flattened"] for r in checked), "runs": len(checked),
                    "not_flattened": [r["run"] for r in checked if not r["flattening"]["flattened"]],
                    "loss_mid": mean_std([r["flattening"]["loss_mid"] for r in checked if r["flattening"].get("loss_mid")])
                    if any(r["flattening"].get("loss_mid") for r in checked) else None,
                    "loss_before": mean_std([r["flattening"]["loss_before"] for r in checked]),
                    "loss_last": mean_std([r["flattening"]["loss_last"] for r in checked]),
                }
    return out


def speed(cfg, study, records, chosen, matched) -> dict | None:
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


def build(cfg: VisionProtocolConfig, study: VisionStudy, records, chosen, matched) -> dict:
    tuned = [r for r in records if not r["baseline"]]
    return {
        "title": study.title,
        "config": to_dict(cfg),
        "headline": cfg.headline,
        "why_headline": WHY_LAST if cfg.headline == "last" else WHY_BEST,
        "select_on": cfg.select_on,
        "steps": {str(k): main_steps(cfg, study, k) for k in cfg.k_per_class},
        "learning_rates": {m: {str(k): _rates_cell(c) for k, c in by_k.items()} for m, by_k in chosen.items()},
        "summary": summarise(cfg, records, chosen),
        "gains": {"scratch": gains(cfg, records, chosen, "scratch"),
                  "pixels_logreg": gains(cfg, records, chosen, "pixels_logreg")},
        "flattening": flattening_summary(cfg, records, chosen),
        "speed": speed(cfg, study, records, chosen, matched),
        "throughput": {"train_patches_per_s": _mean_of(tuned, "train_tokens_per_s"), "train_mfu": _mean_of(tuned, "train_mfu")},
        "runs": records,
        **study.extra,
    }


# ------------------------------------------------------------------------------------- markdown


def _pct(cell: dict | None, signed: bool = False) -> str:
    if not cell:
        return "–"
    mean = f"{100 * cell['mean']:+.1f}" if signed else f"{100 * cell['mean']:.1f}"
    spread = f" ± {100 * cell['std']:.1f}" if cell["n"] > 1 else ""  # one seed has no spread to show
    return mean + spread + (f" (n={cell['n']})" if not signed else "")


def _table(header: str, rows: list[tuple[str, list[str]]], columns: list[str]) -> list[str]:
    return [f"| {header} | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns),
            *[f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]]


def _gain_cell(cell: dict | None) -> str:
    if not cell:
        return "–"
    return f"{_pct(cell, signed=True)} (min {100 * cell['min']:+.1f}; {cell['positive']}/{cell['n']} seeds > 0)"


def targets(results: dict) -> list[str]:
    """The issue's k=10 targets, met or not, in plain words."""
    k = str(TARGET_K)
    over_scratch, summary = results["gains"]["scratch"], results["summary"]
    lines = []
    rotation = over_scratch.get("rotation", {}).get(k)
    if rotation:
        met = rotation["mean"] >= ROTATION_TARGET and rotation["positive"] == rotation["n"] >= TARGET_SEEDS
        lines.append(f"- rotation-pretrained vs scratch at k={k}: {_gain_cell(rotation)} points; target ≥ +5.0 on the "
                     f"mean of ≥ {TARGET_SEEDS} seeds with a gain on every seed: **{'met' if met else 'not met'}**.")
    vits = {m: c for m, c in over_scratch.items() if k in c and summary.get(m, {}).get(k, {}).get("rate") is not None}
    if vits:
        best = max(vits, key=lambda m: vits[m][k]["mean"])
        cell = vits[best][k]
        met = cell["mean"] >= BEST_TARGET and cell["positive"] == cell["n"] >= TARGET_SEEDS
        lines.append(f"- best combination at k={k}: {best}, {_gain_cell(cell)}; aim ≥ +10.0: **{'met' if met else 'not met'}**.")
        logreg = results["gains"]["pixels_logreg"].get(best, {}).get(k)
        if logreg:
            verdict = "beats" if logreg["mean"] > 0 else "falls short of"
            lines.append(f"- {best} {verdict} logistic regression on pixels at k={k} by {_pct(logreg, signed=True)} "
                         f"points ({logreg['positive']}/{logreg['n']} seeds ahead).")
    return lines


def markdown(cfg: VisionProtocolConfig, study: VisionStudy, results: dict) -> str:
    ks = [str(k) for k in cfg.k_per_class]
    columns = [f"k={k}" for k in ks]
    label = {m: spec.label for m, spec in study.methods.items()}
    methods = [m for m in cfg.methods if m in results["summary"]]
    summary = results["summary"]
    steps = ", ".join(f"k={k}: {n}" for k, n in results["steps"].items())
    seeds = "; ".join(f"k={k}: {cfg.seeds_for(int(k))}" for k in ks)
    rates = ", ".join(f"{r:g}" for r in cfg.learning_rates)
    lines = [
        f"# {study.title}", "",
        f"Test accuracy in percent, mean ± std over seeds ({seeds}). Every method of one seed trains on the same "
        f"labelled images and gets the same number of fine-tuning steps ({steps}), fixed before any run. Each "
        f"fine-tuned method searches the learning rates {{{rates}}} and keeps, per k, the one with the best mean "
        f"validation accuracy ({results['select_on']} checkpoint) over "
        + (f"seeds {cfg.lr_seeds} (the other seeds run once, at that rate)" if cfg.lr_seeds is not None else "the seeds")
        + (f"; {', '.join(f'{m} takes the rate of {s}' for m, s in cfg.lr_from.items() if m in methods)}" if cfg.lr_from else "")
        + ".", "", results["why_headline"], "",
    ]
    lines += ["## Targets (k=10)", "", *(targets(results) or ["- (no k=10 results yet)"])]
    head = "last checkpoint" if cfg.headline == "last" else "best-on-validation checkpoint"
    other = "best" if cfg.headline == "last" else "last"
    for title, which in ((f"{head} (headline)", "headline"), ("best-on-validation checkpoint" if other == "best"
                                                               else "last checkpoint", other)):
        rows = [(label[m], [_pct(summary[m].get(k, {}).get(which)) for k in ks]) for m in methods]
        lines += ["", f"## Test accuracy, {title}", "", *_table("method", rows, columns)]
    for reference in ("scratch", "pixels_logreg"):
        cells = results["gains"][reference]
        if cells and reference in label:
            lines += ["", f"## Gain over {label[reference]} (points, {cfg.headline} checkpoint, seed by seed)", "",
                      "Mean ± std of the per-seed differences, the smallest one, and on how many seeds it is positive.", "",
                      *_table("method", [(label[m], [_gain_cell(cells[m].get(k)) for k in ks]) for m in methods if m in cells],
                              columns)]
            per_seed = [f"- {label[m]}, k={k}: " + ", ".join(f"s{s} {100 * v:+.1f}" for s, v in c["per_seed"].items())
                        for m in methods if m in cells for k, c in cells[m].items()]
            lines += ["", "<details><summary>per seed</summary>", "", *per_seed, "", "</details>"]
    lines += ["", "## Learning rates chosen on validation", "",
              *_table("method", [(label[m], [_rate_cell(results["learning_rates"].get(m, {}).get(k)) for k in ks])
                                 for m in methods if m in results["learning_rates"]], columns)]
    lines += ["", "## Has the training loss flattened?", "",
              f"Runs whose training loss flattened, at the chosen rate: the mean over the last {cfg.flat_window:.0%} of the "
              f"steps fell by at most {cfg.flat_tolerance:.0%} (or 0.01) from the {cfg.flat_window:.0%} before. In brackets, "
              "mean losses at half the steps ⇢ the window before → the last window: the cosine schedule slows the last "
              "steps anyway, so a large fall over the second half also means the budget was short.", ""]
    flat = results["flattening"]
    lines += _table("method", [(label[m], [_flat_cell(flat[m].get(k)) for k in ks]) for m in methods if m in flat], columns)
    scratch = flat.get("scratch", {})
    short = [k for k, c in scratch.items() if c["flattened"] < c["runs"]]
    lines += ["", f"**Scratch has not flattened at k={', '.join(short)}**: its budget is too short there, and gains over it "
              "partly measure learning speed." if short else "Scratch's training loss has flattened on every run checked."]
    lines += _speed_lines(results.get("speed"), label)
    for heading, body in study.sections.items():
        lines += ["", f"## {heading}", "", *body]
    throughput = results["throughput"]
    if throughput["train_patches_per_s"]:
        lines += ["", "## Throughput", "",
                  f"Fine-tuning runs averaged {throughput['train_patches_per_s']['mean']:.0f} patches/s"
                  + (f" at {100 * throughput['train_mfu']['mean']:.1f}% MFU (against the trainer's peak: the "
                     "datasheet figure on known GPUs, a matmul it times on a CPU)" if throughput["train_mfu"] else "") + "."]
    args = " ".join(cfg.finetune_args) or "(defaults)"
    lines += ["", "## Settings", "", f"- fine-tuning: `recipes/{study.recipe}.py` with `{args}`"]
    lines += [f"- k={k} also: `{' '.join(a)}`" for k, a in cfg.k_args.items()]
    lines += [f"- {label[m]} also: `{' '.join(a)}`" for m, a in cfg.method_overrides.items() if m in methods and a]
    lines += [f"- {label[m]}: `{' '.join(study.methods[m].args)}`" for m in methods if study.methods[m].args]
    lines += ["", "![accuracy vs labels](accuracy_vs_labels.png)", ""]
    if results.get("speed"):
        lines += ["![learning speed](learning_speed.png)", ""]
    lines += [f"![curves k={k}](curves/k{k}.png)" for k in ks] + [""]
    return "\n".join(lines)


def _rate_cell(cell: dict | None) -> str:
    if not cell:
        return "–"
    if "from" in cell:
        return f"{cell['rate']:g} (from {cell['from']})"
    tried = ", ".join(f"{r}: {100 * v:.1f}" for r, v in sorted(cell["by_rate"].items(), key=lambda item: float(item[0])))
    return f"**{cell['rate']:g}** ({tried})"


def _flat_cell(cell: dict | None) -> str:
    if not cell:
        return "–"
    mid = f"{cell['loss_mid']['mean']:.3f} ⇢ " if cell.get("loss_mid") else ""
    return f"{cell['flattened']}/{cell['runs']} ({mid}{cell['loss_before']['mean']:.3f} → {cell['loss_last']['mean']:.3f})"


def _speed_lines(result: dict | None, label: dict) -> list[str]:
    if not result:
        return []
    budgets = sorted({int(s) for c in result["curves"].values() for s in c})
    lines = ["", f"## Learning speed at k={result['k']}", "",
             "Test accuracy after each fine-tuning budget (its own cosine schedule), at the chosen rate.", "",
             *_table("method", [(label[m], [_pct(c.get(str(b))) for b in budgets]) for m, c in result["curves"].items()],
                     [f"{b} steps" for b in budgets])]
    matched = result.get("compute_matched")
    if matched and matched.get("accuracy"):
        lines += ["", f"Compute-matched: scratch fine-tuned for {matched['steps']} steps ({matched['main_steps']} + "
                  f"{matched['extra_steps']}, the {matched['pretrain_seconds'] / 60:.1f} min that {matched['method']} "
                  f"pretraining took, at scratch's {matched['scratch_seconds_per_step']:.3f} s per step): "
                  f"{_pct(matched['accuracy'])}."]
    elif matched:
        lines += ["", f"Compute-matched point: not run ({matched.get('why_not', 'pending')})."]
    return lines


# ---------------------------------------------------------------------------------------- plots


def plot_speed(result: dict, labels: dict, path, title: str, reference: dict | None = None) -> None:
    plt = plots._pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method, curve in result["curves"].items():
        xs = sorted(int(s) for s in curve)
        cells = [curve[str(x)] for x in xs]
        ax.errorbar(xs, [100 * c["mean"] for c in cells], yerr=[100 * c["std"] for c in cells], marker="o", capsize=3,
                    label=labels.get(method, method))
    ticks = {int(s) for curve in result["curves"].values() for s in curve}
    matched = result.get("compute_matched") or {}
    if matched.get("accuracy"):
        cell, minutes = matched["accuracy"], matched["pretrain_seconds"] / 60
        ax.errorbar([matched["steps"]], [100 * cell["mean"]], yerr=[100 * cell["std"]], marker="*", markersize=12,
                    capsize=3, linestyle="none", color="black",
                    label=f"scratch + {minutes:.{0 if minutes >= 10 else 1}f} min of {matched['method']} pretraining as steps")
        ticks.add(matched["steps"])
    if reference:
        ax.axhline(100 * reference["mean"], color="grey", linestyle="--", linewidth=1, label=labels.get("pixels_logreg", ""))
    ax.set_xscale("log")
    ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("fine-tuning steps")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    plots._save(fig, path)


def write_all(cfg: VisionProtocolConfig, study: VisionStudy, records, chosen, matched) -> dict:
    """results.json, results.md, accuracy_vs_labels.png, learning_speed.png and curves/k*.png."""
    from pathlib import Path

    out = Path(cfg.output_dir)
    results = build(cfg, study, records, chosen, matched)
    write_json(out / "results.json", results)
    write_text(out / "results.md", markdown(cfg, study, results))
    labels = {m: study.methods[m].label for m in cfg.methods}
    plot_summary = {m: {k: {"test_accuracy": c["headline"]} for k, c in by_k.items() if "headline" in c}
                    for m, by_k in results["summary"].items()}
    plots.plot_accuracy(plot_summary, labels, cfg.k_per_class, out / "accuracy_vs_labels.png",
                        f"{study.title}, {cfg.headline} checkpoint")
    if results["speed"] and results["speed"]["curves"]:
        reference = results["summary"].get("pixels_logreg", {}).get(str(cfg.speed_k), {}).get("headline")
        plot_speed(results["speed"], labels, out / "learning_speed.png",
                   f"Learning speed, k={cfg.speed_k} per class (mean ± std over seeds)", reference)
    (out / "curves").mkdir(exist_ok=True)
    for k in cfg.k_per_class:
        first = cfg.seeds_for(k)[0]
        histories = {r["run"]: read_history(runs_dir(cfg) / r["run"]) for m in cfg.methods
                     for r in _chosen_runs(records, chosen, m, k) if not r["baseline"] and r["seed"] == first}
        histories = {name: h for name, h in histories.items() if h}
        if histories:
            plots.plot_curves(histories, out / "curves" / f"k{k}.png", f"{study.title}: k={k}, seed {first}, chosen rates")
    return results
