"""The one report writer of every study: how a cell prints, the tables, per-seed gains, and the result files.

``results.json`` holds the study's config, ``runs`` (one record per cell), ``summary`` (mean ± std
over seeds, std with ddof=1, 0 for one seed) and ``gains`` (a method's test accuracy minus a
reference method's on the same seed, so the labels drawn are the same on both sides: ``per_seed``,
mean ± std, ``min`` and how many seeds are ``positive``). ``results.md`` shows the same numbers as
tables, in percent: the plain plan's layout (:func:`grid_markdown`) or the protocol's
(:func:`protocol_markdown`), both built from the same cells and tables. Both files record the command
and the commit that wrote them (``provenance``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlp_ssl.atomic import write_json, write_text
from nlp_ssl.study import provenance

WHY_LAST = (
    "The headline uses the **last** checkpoint: every budget is fixed in advance and long enough for "
    "scratch's training loss to flatten (checked below), so the last model involves no selection, while "
    "the best-on-validation checkpoint is chosen among dozens of evaluations on a validation set of "
    "2 images per class at k ≤ 10 (20 images), which picks noise and flatters whichever run is noisiest. "
    "The learning rate, a coarser choice, is chosen on the validation accuracy averaged over the seeds that search it."
)
WHY_BEST = "The headline uses the best-on-validation checkpoint of each run (`headline=best`)."


# ------------------------------------------------------------------------------------- numbers


def mean_std(values: list[float]) -> dict:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def summarise(records: list[dict], metrics: dict[str, str]) -> dict:
    """``{method: {k: {name: mean_std}}}`` of each record field ``metrics[name]``, in the records' order."""
    values: dict = {}
    for rec in records:
        cell = values.setdefault(rec["method"], {}).setdefault(str(rec["k_per_class"]), {})
        for name, key in metrics.items():
            if rec.get(key) is not None:
                cell.setdefault(name, []).append(rec[key])
    return {m: {k: {name: mean_std(v) for name, v in cell.items()} for k, cell in by_k.items()} for m, by_k in values.items()}


def gains(records: list[dict], reference: str, key: str) -> dict:
    """``key`` minus ``reference``'s, per method, k and seed (the seeds both have), in the records' order."""
    base = {(r["k_per_class"], r["seed"]): r[key] for r in records if r["method"] == reference and r.get(key) is not None}
    out: dict = {}
    for rec in records:
        pair = (rec["k_per_class"], rec["seed"])
        if rec["method"] != reference and pair in base and rec.get(key) is not None:
            cell = out.setdefault(rec["method"], {}).setdefault(str(rec["k_per_class"]), {"per_seed": {}})
            cell["per_seed"][str(rec["seed"])] = rec[key] - base[pair]
    for by_k in out.values():
        for cell in by_k.values():
            values = list(cell["per_seed"].values())
            cell.update(mean_std(values), min=float(min(values)), positive=sum(v > 0 for v in values))
    return out


# ------------------------------------------------------------------------------- cells, tables


def cell(stats: dict | None, signed: bool = False) -> str:
    """A mean over seeds in percent: ``63.7 ± 2.9 (n=5)``; one seed has no spread to show: ``79.0 (n=1)``.
    A signed cell (a gain) is ``+2.3 ± 1.8``, its count given beside it."""
    if not stats:
        return "–"
    mean = f"{100 * stats['mean']:+.1f}" if signed else f"{100 * stats['mean']:.1f}"
    spread = f" ± {100 * stats['std']:.1f}" if stats["n"] > 1 else ""
    return mean + spread + (f" (n={stats['n']})" if not signed else "")


def gain_cell(stats: dict | None) -> str:
    if not stats:
        return "–"
    return f"{cell(stats, signed=True)} (min {100 * stats['min']:+.1f}; {stats['positive']}/{stats['n']} seeds > 0)"


def table(header: str, rows: list[tuple[str, list[str]]], columns: list[str]) -> list[str]:
    return [f"| {header} | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns),
            *[f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]]


def gain_section(title: str, gained: dict, methods: list[str], label: dict, ks: list[str]) -> list[str]:
    """A gains table (and the per-seed differences behind it, folded)."""
    rows = [(label[m], [gain_cell(gained[m].get(k)) for k in ks]) for m in methods if m in gained]
    per_seed = [f"- {label[m]}, k={k}: " + ", ".join(f"s{s} {100 * v:+.1f}" for s, v in c["per_seed"].items())
                for m in methods if m in gained for k, c in gained[m].items()]
    return ["", f"## {title}", "",
            "Mean ± std of the per-seed differences, the smallest one, and on how many seeds it is positive.", "",
            *table("method", rows, [f"k={k}" for k in ks]),
            "", "<details><summary>per seed</summary>", "", *per_seed, "", "</details>"]


def settings(cfg, study, results: dict, methods: list[str], k_args: dict) -> list[str]:
    """How the fine-tuning runs were called (the study's arguments, each k's, each method's), and what wrote the report."""
    label = {m: spec.label for m, spec in study.methods.items()}
    args = " ".join(cfg.finetune_args) or "(defaults)"
    lines = ["", "## Settings", "", f"- fine-tuning: `recipes/{study.recipe}.py` with `{args}`"]
    lines += [f"- k={k} also: `{' '.join(a)}`" for k, a in k_args.items()]
    lines += [f"- {label[m]} also: `{' '.join(a)}`" for m, a in cfg.method_overrides.items() if m in methods and a]
    lines += [f"- {label[m]}: `{' '.join(study.methods[m].args)}`" for m in methods if study.methods[m].args]
    return lines + ([provenance.line(results["provenance"])] if "provenance" in results else [])


def write(out: Path, results: dict, layout, cfg, study) -> dict:
    """``results.json`` and ``results.md`` (``layout(cfg, study, results)``) in ``out``, each with the command and
    the commit that made it; returns the results."""
    results = {**results, "provenance": provenance.record(study.command)}
    write_json(Path(out) / "results.json", results)
    write_text(Path(out) / "results.md", layout(cfg, study, results))
    return results


# ---------------------------------------------------------------------------- the plain plan


def grid_markdown(cfg, study, results: dict) -> str:
    ks, summary = [str(k) for k in cfg.k_per_class], results["summary"]
    methods = [m for m in cfg.methods if m in summary]
    columns = [f"k={k}" for k in ks]
    label = {m: spec.label for m, spec in study.methods.items()}
    sizes = {r.get("test_examples") for r in results["runs"] if r.get("test_examples")}
    lines = [
        f"# {study.title}", "",
        f"Mean ± std over seeds {list(cfg.seeds)}, in percent"
        + (f", on {', '.join(str(s) for s in sorted(sizes))} test examples" if sizes else "")
        + ". Fine-tuned runs keep their best checkpoint by validation accuracy, on a validation set disjoint from the k labels.",
    ]
    for title, metric in (("Test accuracy", "test_accuracy"), ("Test macro-F1", "test_macro_f1")):
        rows = [(label[m], [cell(summary[m].get(k, {}).get(metric)) for k in ks]) for m in methods]
        lines += ["", f"## {title}", "", *table("method", rows, columns)]
    if results["gains"]:
        lines += gain_section(f"Gain over {label[study.reference]} (points, seed by seed)", results["gains"], methods,
                              label, ks)
    lines += _best_vs_last(results["runs"])
    for heading, body in study.sections.items():
        lines += ["", f"## {heading}", "", *body]
    lines += settings(cfg, study, results, methods, {})
    lines += ["", "![accuracy vs labels](accuracy_vs_labels.png)", "", *[f"![curves k={k}](curves/k{k}.png)" for k in ks], ""]
    return "\n".join(lines)


def _best_vs_last(runs: list[dict]) -> list[str]:
    """Per fine-tuned run: what the best checkpoint bought over the last step."""
    tuned = [r for r in runs if r.get("best_step") is not None and r.get("last_val_loss") is not None]
    if not tuned:
        return []
    lines = [
        "", "## Best checkpoint vs last step", "",
        "`val loss ↑`: the validation loss ended above its minimum while the training loss fell (overfitting).", "",
        "| run | best step | last step | val acc best / last | test acc best / last | min val loss (step) → last | val loss ↑ |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in tuned:
        rising = r["last_val_loss"] > r["min_val_loss"] + 1e-6 and r["train_loss_fell"]
        last_test = f"{100 * r['last_test_accuracy']:.1f}" if r.get("last_test_accuracy") is not None else "–"
        lines.append(
            f"| {r['run']} | {r['best_step']} | {r['last_step']} | "
            f"{100 * r['best_val_accuracy']:.1f} / {100 * r['last_val_accuracy']:.1f} | "
            f"{100 * r['test_accuracy']:.1f} / {last_test} | "
            f"{r['min_val_loss']:.3f} ({r['min_val_loss_step']}) → {r['last_val_loss']:.3f} | {'yes' if rising else 'no'} |"
        )
    return lines


# ------------------------------------------------------------------------------ the protocol


def protocol_markdown(cfg, study, results: dict) -> str:
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
    if cfg.targets:
        lines += ["## Targets", "", *(targets(results, cfg.targets) or ["- (no results for them yet)"])]
    head = "last checkpoint" if cfg.headline == "last" else "best-on-validation checkpoint"
    other = "best" if cfg.headline == "last" else "last"
    for title, which in ((f"{head} (headline)", "headline"), ("best-on-validation checkpoint" if other == "best"
                                                               else "last checkpoint", other)):
        rows = [(label[m], [cell(summary[m].get(k, {}).get(which)) for k in ks]) for m in methods]
        lines += ["", f"## Test accuracy, {title}", "", *table("method", rows, columns)]
    for reference in study.references:
        gained = results["gains"][reference]
        if gained and reference in label:
            title = f"Gain over {label[reference]} (points, {cfg.headline} checkpoint, seed by seed)"
            lines += gain_section(title, gained, methods, label, ks)
    lines += ["", "## Learning rates chosen on validation", "",
              *table("method", [(label[m], [_rate_cell(results["learning_rates"].get(m, {}).get(k)) for k in ks])
                                for m in methods if m in results["learning_rates"]], columns)]
    lines += _flattening_lines(cfg, results["flattening"], methods, label, ks)
    lines += _speed_lines(results.get("speed"), label)
    for heading, body in study.sections.items():
        lines += ["", f"## {heading}", "", *body]
    throughput = results["throughput"]
    if throughput["train_patches_per_s"]:
        lines += ["", "## Throughput", "",
                  f"Fine-tuning runs averaged {throughput['train_patches_per_s']['mean']:.0f} patches/s"
                  + (f" at {100 * throughput['train_mfu']['mean']:.1f}% MFU (against the trainer's peak: the "
                     "datasheet figure on known GPUs, a matmul it times on a CPU)" if throughput["train_mfu"] else "") + "."]
    lines += settings(cfg, study, results, methods, cfg.k_args)
    lines += ["", "![accuracy vs labels](accuracy_vs_labels.png)", ""]
    if results.get("speed"):
        lines += ["![learning speed](learning_speed.png)", ""]
    lines += [f"![curves k={k}](curves/k{k}.png)" for k in ks] + [""]
    return "\n".join(lines)


def targets(results: dict, wanted: list[dict]) -> list[str]:
    """Each target, met or not, in plain words: ``{method, over, k, gain, seeds}``, where ``method`` may be
    ``best`` (the fine-tuned method with the largest mean gain over ``over`` at k); met when the mean
    paired gain reaches ``gain`` points on at least ``seeds`` seeds, with a gain on every seed."""
    lines = []
    for target in wanted:
        k, over, need, seeds = str(target["k"]), target["over"], target["gain"], target.get("seeds", 5)
        gains = results["gains"].get(over, {})
        if target["method"] == "best":
            tuned = {m: c[k] for m, c in gains.items() if k in c
                     and results["summary"].get(m, {}).get(k, {}).get("rate") is not None}
            if not tuned:
                continue
            method = max(tuned, key=lambda m: tuned[m]["mean"])
            name = f"best fine-tuned method at k={k} ({method})"
        else:
            method = target["method"]
            name = f"{method} at k={k}"
        stats = gains.get(method, {}).get(k)
        if not stats:
            continue
        met = stats["mean"] >= need / 100 and stats["positive"] == stats["n"] >= seeds
        lines.append(f"- {name} vs {over}: {gain_cell(stats)} points; target ≥ +{need:.1f} on the mean of ≥ {seeds} "
                     f"seeds with a gain on every seed: **{'met' if met else 'not met'}**.")
    return lines


def _rate_cell(chosen: dict | None) -> str:
    if not chosen:
        return "–"
    if "from" in chosen:
        return f"{chosen['rate']:g} (from {chosen['from']})"
    tried = ", ".join(f"{r}: {100 * v:.1f}" for r, v in sorted(chosen["by_rate"].items(), key=lambda item: float(item[0])))
    return f"**{chosen['rate']:g}** ({tried})"


def _flattening_lines(cfg, flat: dict, methods: list[str], label: dict, ks: list[str]) -> list[str]:
    lines = ["", "## Has the training loss flattened?", "",
             f"Runs whose training loss flattened, at the chosen rate: the mean over the last {cfg.flat_window:.0%} of the "
             f"steps fell by at most {cfg.flat_tolerance:.0%} (or 0.01) from the {cfg.flat_window:.0%} before. In brackets, "
             "mean losses at half the steps ⇢ the window before → the last window: the cosine schedule slows the last "
             "steps anyway, so a large fall over the second half also means the budget was short.", ""]
    lines += table("method", [(label[m], [_flat_cell(flat[m].get(k)) for k in ks]) for m in methods if m in flat],
                   [f"k={k}" for k in ks])
    short = [k for k, c in flat.get("scratch", {}).items() if c["flattened"] < c["runs"]]
    verdict = (f"**Scratch has not flattened at k={', '.join(short)}**: its budget is too short there, and gains over it "
               "partly measure learning speed." if short else "Scratch's training loss has flattened on every run checked.")
    return [*lines, "", verdict]


def _flat_cell(flat: dict | None) -> str:
    if not flat:
        return "–"
    mid = f"{flat['loss_mid']['mean']:.3f} ⇢ " if flat.get("loss_mid") else ""
    return f"{flat['flattened']}/{flat['runs']} ({mid}{flat['loss_before']['mean']:.3f} → {flat['loss_last']['mean']:.3f})"


def _speed_lines(result: dict | None, label: dict) -> list[str]:
    if not result:
        return []
    budgets = sorted({int(s) for c in result["curves"].values() for s in c})
    lines = ["", f"## Learning speed at k={result['k']}", "",
             "Test accuracy after each fine-tuning budget (its own cosine schedule), at the chosen rate.", "",
             *table("method", [(label[m], [cell(c.get(str(b))) for b in budgets]) for m, c in result["curves"].items()],
                    [f"{b} steps" for b in budgets])]
    matched = result.get("compute_matched")
    if matched and matched.get("accuracy"):
        lines += ["", f"Compute-matched: scratch fine-tuned for {matched['steps']} steps ({matched['main_steps']} + "
                  f"{matched['extra_steps']}, the {matched['pretrain_seconds'] / 60:.1f} min that {matched['method']} "
                  f"pretraining took, at scratch's {matched['scratch_seconds_per_step']:.3f} s per step): "
                  f"{cell(matched['accuracy'])}."]
    elif matched:
        lines += ["", f"Compute-matched point: not run ({matched.get('why_not', 'pending')})."]
    return lines
