"""The study's one result format: every run, mean ± std over seeds, and per-seed gains over a reference.

``results.json`` holds ``labels`` (each method's name in tables), ``runs`` (one record per method, k and seed), ``summary``
(``{method: {k: {metric: {"mean", "std", "n"}}}}``, std with ddof=1, 0 for one seed) and ``gains``
(``{method: {k: {"per_seed": {seed: points}, "mean", "std", "min", "n"}}}``: test accuracy minus the
reference method's on the same seed, so the labels drawn are the same on both sides).
``results.md`` shows the same numbers as tables, in percent.
"""

from __future__ import annotations

import numpy as np

from nlp_ssl.config import to_dict

#: Metrics averaged over seeds in ``summary``.
SUMMARISED = ("test_accuracy", "test_macro_f1", "last_test_accuracy", "best_val_accuracy", "last_val_accuracy", "best_step")


def mean_std(values: list[float]) -> dict:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def summarise(records: list[dict]) -> dict:
    summary: dict = {}
    for rec in records:
        cell = summary.setdefault(rec["method"], {}).setdefault(str(rec["k_per_class"]), {})
        for key in SUMMARISED:
            if rec.get(key) is not None:
                cell.setdefault(key, []).append(rec[key])
    return {m: {k: {key: mean_std(v) for key, v in cell.items()} for k, cell in by_k.items()} for m, by_k in summary.items()}


def gains(records: list[dict], reference: str) -> dict:
    """Test accuracy minus ``reference``'s, per method, k and seed (only seeds both have)."""
    base = {(r["k_per_class"], r["seed"]): r["test_accuracy"] for r in records if r["method"] == reference}
    out: dict = {}
    for rec in records:
        key = (rec["k_per_class"], rec["seed"])
        if rec["method"] != reference and key in base:
            cell = out.setdefault(rec["method"], {}).setdefault(str(rec["k_per_class"]), {"per_seed": {}})
            cell["per_seed"][str(rec["seed"])] = rec["test_accuracy"] - base[key]
    for by_k in out.values():
        for cell in by_k.values():
            values = list(cell["per_seed"].values())
            cell.update(mean_std(values), min=float(min(values)))
    return out


def build(cfg, study, records: list[dict]) -> dict:
    return {
        "title": study.title,
        "config": to_dict(cfg),
        "reference": study.reference,
        "labels": {m: spec.label for m, spec in study.methods.items() if m in cfg.methods},
        "runs": records,
        "summary": summarise(records),
        "gains": gains(records, study.reference),
        **study.extra,
    }


def _pct(cell: dict | None, signed: bool = False) -> str:
    if not cell:
        return "–"
    mean = f"{100 * cell['mean']:+.1f}" if signed else f"{100 * cell['mean']:.1f}"
    return f"{mean} ± {100 * cell['std']:.1f}"


def _table(rows: list[tuple[str, list[str]]], ks: list[int]) -> list[str]:
    return [
        "| method | " + " | ".join(f"k={k}" for k in ks) + " |",
        "| --- |" + " --- |" * len(ks),
        *[f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows],
    ]


def markdown(cfg, study, results: dict) -> str:
    ks, summary, methods = list(cfg.k_per_class), results["summary"], [m for m in cfg.methods if m in results["summary"]]
    label = {m: spec.label for m, spec in study.methods.items()}
    sizes = {r.get("test_examples") for r in results["runs"] if r.get("test_examples")}
    lines = [
        f"# {study.title}", "",
        f"Mean ± std over seeds {list(cfg.seeds)}, in percent"
        + (f", on {', '.join(str(s) for s in sorted(sizes))} test examples" if sizes else "")
        + ". Fine-tuned runs keep their best checkpoint by validation accuracy, on a validation set disjoint from the k labels.",
        "", "## Test accuracy", "",
        *_table([(label[m], [_pct(summary[m].get(str(k), {}).get("test_accuracy")) for k in ks]) for m in methods], ks),
        "", "## Test macro-F1", "",
        *_table([(label[m], [_pct(summary[m].get(str(k), {}).get("test_macro_f1")) for k in ks]) for m in methods], ks),
    ]
    gained = [m for m in methods if m in results["gains"]]
    if gained:
        lines += ["", f"## Gain over {label[study.reference]} (points, seed by seed)", "",
                  "Mean ± std of the per-seed differences, and the smallest one (min).", ""]
        rows = []
        for m in gained:
            cells = []
            for k in ks:
                cell = results["gains"][m].get(str(k))
                cells.append(f"{_pct(cell, signed=True)} (min {100 * cell['min']:+.1f})" if cell else "–")
            rows.append((label[m], cells))
        lines += _table(rows, ks)
    lines += _best_vs_last(results["runs"])
    for heading, body in study.sections.items():
        lines += ["", f"## {heading}", "", *body]
    args = " ".join(cfg.finetune_args) or "(defaults)"
    lines += ["", "## Settings", "", f"- fine-tuning: `recipes/{study.recipe}.py` with `{args}`"]
    lines += [f"- {label[m]} also: `{' '.join(a)}`" for m, a in cfg.method_overrides.items() if m in methods and a]
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
