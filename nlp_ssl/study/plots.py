"""The study's plots: test accuracy against labels per class, training curves, and learning speed.

The curves show training loss, validation loss and validation accuracy against the optimizer step,
one line per run; for a single run the best step is marked, so overfitting and what
best-checkpointing recovers can be read off.
"""

from __future__ import annotations

from pathlib import Path

from nlp_ssl.atomic import write_bytes
from nlp_ssl.study.runs import evaluations, validation_loss


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    write_bytes(path, buffer.getvalue())


def plot_accuracy(summary: dict, labels: dict[str, str], ks: list[int], path: Path, title: str) -> None:
    """Mean test accuracy ± std over seeds against k, one line per method, k on a log axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method, label in labels.items():
        by_k = summary.get(method, {})
        xs = [k for k in ks if "test_accuracy" in by_k.get(str(k), {})]
        cells = [by_k[str(k)]["test_accuracy"] for k in xs]
        means, stds = [100 * c["mean"] for c in cells], [100 * c["std"] for c in cells]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()  # a log axis would label stray points between the budgets
    ax.set_xlabel("labelled training examples per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title}\n(mean ± std over seeds)", fontsize=10)  # one line overflows with long titles
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_curves(histories: dict[str, list[dict]], path: Path, title: str) -> None:
    """Training loss, validation loss and validation accuracy against step, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0), dpi=110)
    for name, history in histories.items():
        train = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
        evals = evaluations(history)
        if train:
            axes[0].plot(*zip(*train), label=name, linewidth=1.1)
        if evals:
            steps = [h["step"] for h in evals]
            axes[1].plot(steps, [validation_loss(h) for h in evals], "o-", markersize=2, label=name, linewidth=1.1)
            axes[2].plot(steps, [100 * h["eval_accuracy"] for h in evals], "o-", markersize=2, label=name, linewidth=1.1)
        if evals and len(histories) == 1:
            best = max(evals, key=lambda h: h["eval_accuracy"])["step"]
            for ax in axes:
                ax.axvline(best, color="grey", linestyle="--", linewidth=1, label="best step")
    panels = ("training loss", "validation loss (classification)", "validation accuracy (%)")
    for ax, panel in zip(axes, panels):
        ax.set_xlabel("optimizer step")
        ax.set_title(panel)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)


def plot_speed(result: dict, labels: dict, path, title: str, reference: dict | None = None) -> None:
    plt = _pyplot()
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
    _save(fig, path)
