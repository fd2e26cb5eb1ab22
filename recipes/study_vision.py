"""Few-label study: does self-supervised pretraining help a ViT when labels are scarce?

    python recipes/study_vision.py [--config recipes/configs/study_vision.yaml] [key=value ...]

For every label budget (``k_per_class``) and seed it fine-tunes the same ViT from scratch, from a
rotation (RotNet) checkpoint and from a masked-image-modelling (SimMIM) checkpoint, and fits a
logistic regression on raw pixels of the same k images per class. All of them are scored on the
same test images. Writes, under ``output_dir``:

- ``results.md`` / ``results.json``: test accuracy mean ± std over seeds, per method and budget,
  and every run;
- ``accuracy_vs_labels.png``: test accuracy against labels per class;
- ``curves_k<k>.png`` and ``runs/<run>/curves.png``: training/validation loss and validation accuracy
  against step, per run.

Checkpoints are inputs (``rotation_checkpoint``, ``mim_checkpoint``) or, when empty, pretrained here
with ``recipes/pretrain_vit.py``. Each run is a subprocess of the recipes, as a user would run them;
a run whose ``all_results.json`` exists is reused, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from nlp_ssl.cli import run  # noqa: E402
from nlp_ssl.config import parse_config, save_config  # noqa: E402
from nlp_ssl.errors import ConfigError, NlpSslError  # noqa: E402

RECIPES = Path(__file__).resolve().parent
FINETUNED = ("scratch", "rotation", "mim")
METHODS = (*FINETUNED, "pixels_logreg")
LABELS = {
    "scratch": "ViT from scratch",
    "rotation": "ViT pretrained: rotation (RotNet)",
    "mim": "ViT pretrained: masked image modelling (SimMIM)",
    "pixels_logreg": "logistic regression on raw pixels",
}


@dataclass
class StudyVisionConfig:
    output_dir: str = "results/vision_study"
    k_per_class: list[int] = field(default_factory=lambda: [10, 100])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    #: Pretrained checkpoints (pretrain_vit.py outputs); empty: pretrain one here.
    rotation_checkpoint: str | None = None
    mim_checkpoint: str | None = None
    #: Extra ``key=value`` arguments: for both pretraining runs, for each, and for every fine-tuning run.
    pretrain_args: list[str] = field(default_factory=list)
    rotation_args: list[str] = field(default_factory=list)
    mim_args: list[str] = field(default_factory=list)
    finetune_args: list[str] = field(default_factory=list)
    #: Fine-tuning arguments for one method only, after ``finetune_args``: each init's own learning
    #: rate, chosen on validation, e.g. ``{mim: [learning_rate=2e-4]}``.
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    #: Reuse runs that already finished (their all_results.json exists).
    reuse: bool = True


def check(cfg: StudyVisionConfig) -> None:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"methods: {unknown[0]!r} is not one of {list(METHODS)}")
    if not cfg.methods or not cfg.k_per_class or not cfg.seeds:
        raise ConfigError("methods, k_per_class and seeds must each list at least one value")
    bad = [k for k in cfg.k_per_class if k <= 0]
    if bad:
        raise ConfigError(f"k_per_class: {bad[0]} is not a positive number of labels per class")
    for name in ("rotation_checkpoint", "mim_checkpoint"):
        path = getattr(cfg, name)
        if path and not (Path(path) / "config.json").is_file():
            raise ConfigError(f"{name} {path}: not a model folder (no config.json)")
    for name in ("pretrain_args", "rotation_args", "mim_args", "finetune_args"):
        for arg in getattr(cfg, name):
            if "=" not in arg:
                raise ConfigError(f"{name}: {arg!r} is not of the form key=value")
    for method, args in cfg.method_overrides.items():
        if method not in FINETUNED:
            raise ConfigError(f"method_overrides: {method!r} is not one of {list(FINETUNED)}")
        if not isinstance(args, list) or any(not isinstance(a, str) or "=" not in a for a in args):
            raise ConfigError(f"method_overrides.{method}: {args!r} is not a list of key=value")


def run_recipe(script: str, args: list[str], out: Path, reuse: bool) -> dict:
    """Run ``recipes/<script>`` into ``out`` (log in ``out.log``); return its all_results.json."""
    results = out / "all_results.json"
    if reuse and results.is_file():
        return json.loads(results.read_text(encoding="utf-8"))
    if not reuse:
        shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    # resume=auto: an interrupted run continues from its last checkpoint.
    cmd = [sys.executable, str(RECIPES / script), *args, f"output_dir={out}", "progress_bar=false", "resume=auto"]
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise NlpSslError(f"{script} {' '.join(args)} failed (exit {proc.returncode}): {lines[-1] if lines else ''}; log: {log}")
    print(f"{script} -> {out} ({time.perf_counter() - start:.0f}s)", flush=True)
    return json.loads(results.read_text(encoding="utf-8"))


def pretrained(cfg: StudyVisionConfig, task: str) -> tuple[str, dict]:
    """The checkpoint for ``task`` (given, or pretrained now) and what is known of its pretraining."""
    given = getattr(cfg, f"{task}_checkpoint")
    if given:
        info_file = Path(given) / "all_results.json"
        info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
        return given, info
    out = Path(cfg.output_dir) / f"pretrain_{task}"
    info = run_recipe("pretrain_vit.py", [f"task={task}", *cfg.pretrain_args, *getattr(cfg, f"{task}_args")], out, cfg.reuse)
    return str(out), info


def logreg_run(cfg: StudyVisionConfig, k: int, seed: int) -> dict:
    """Logistic regression on the pixels of exactly the k-per-class images the ViTs train on."""
    from finetune_vision import FinetuneVisionConfig, labelled_splits

    from nlp_ssl.baselines import pixels_logreg

    ft = parse_config(FinetuneVisionConfig, [*cfg.finetune_args, f"seed={seed}", f"data.k_per_class={k}"],
                      default_yaml=RECIPES / "configs" / "finetune_vision.yaml")
    splits = labelled_splits(ft)
    train, test = splits["train"], splits["test"]
    scores = pixels_logreg(list(train["image"]), train["label"], list(test["image"]), test["label"], seed=seed)
    return {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"], "test_images": len(test)}


def summarise(records: list[dict], methods: list[str], ks: list[int]) -> dict:
    summary: dict = {}
    for method in methods:
        for k in ks:
            accs = [r["test_accuracy"] for r in records if r["method"] == method and r["k_per_class"] == k]
            if accs:
                std = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
                summary.setdefault(method, {})[str(k)] = {"mean": float(np.mean(accs)), "std": std, "n": len(accs)}
    return summary


def plot_accuracy(summary: dict, ks: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method, by_k in summary.items():
        xs = [k for k in ks if str(k) in by_k]
        means = [100 * by_k[str(k)]["mean"] for k in xs]
        stds = [100 * by_k[str(k)]["std"] for k in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=LABELS[method])
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST: few-label accuracy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(histories: dict[str, list[dict]], path: Path, title: str) -> None:
    """Three panels: training loss, validation loss, validation accuracy against step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0), dpi=110)
    panels = (("train_loss", "training loss"), ("eval_loss", "validation loss"), ("eval_accuracy", "validation accuracy"))
    for ax, (key, label) in zip(axes, panels):
        for name, history in histories.items():
            points = {}
            for h in history:  # the trainer's re-evaluation of the best model repeats the last step: keep the first
                if key in h and h["step"] not in points:
                    points[h["step"]] = h[key]
            if points:
                ax.plot(list(points), list(points.values()), label=name, linewidth=1.1)
        ax.set_xlabel("optimizer step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_markdown(cfg, summary, records, pretraining, path: Path) -> None:
    ks = list(cfg.k_per_class)
    lines = [
        "# Vision few-label study (Fashion-MNIST)",
        "",
        f"Test accuracy (%) on {records[0]['test_images'] if records else '?'} test images, mean ± std over seeds "
        f"{list(cfg.seeds)}; the ViTs also use a disjoint validation set to pick their best checkpoint.",
        "",
        "| method | " + " | ".join(f"k={k}" for k in ks) + " |",
        "| --- | " + " | ".join("---" for _ in ks) + " |",
    ]
    for method, by_k in summary.items():
        cells = [f"{100 * by_k[str(k)]['mean']:.2f} ± {100 * by_k[str(k)]['std']:.2f} (n={by_k[str(k)]['n']})" if str(k) in by_k else "–" for k in ks]
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    if "scratch" in summary:
        lines += ["", "Gain over the same ViT from scratch (points):", ""]
        for method in ("rotation", "mim", "pixels_logreg"):
            if method in summary:
                gains = [
                    f"k={k}: {100 * (summary[method][str(k)]['mean'] - summary['scratch'][str(k)]['mean']):+.2f}"
                    for k in ks if str(k) in summary[method] and str(k) in summary["scratch"]
                ]
                lines.append(f"- {LABELS[method]}: " + ", ".join(gains))
    lines += ["", "## Pretraining", ""]
    for task, (ckpt, info) in pretraining.items():
        runtime = info.get("train_runtime_s")
        how = "given as input" if getattr(cfg, f"{task}_checkpoint") else (
            f"pretrained by this study with `{' '.join([*cfg.pretrain_args, *getattr(cfg, f'{task}_args')]) or '(defaults)'}`"
        )
        lines.append(
            f"- {task}: `{ckpt}` ({how}; its config is in its README.md), {info.get('steps', '?')} steps"
            + (f", {runtime / 60:.1f} min" if isinstance(runtime, (int, float)) else "")
            + "".join(f", {k}={v:.4f}" for k, v in info.items() if k in ("eval_loss", "eval_accuracy") and isinstance(v, float))
        )
    lines += [
        "",
        "## Settings",
        "",
        f"- fine-tuning arguments (on top of recipes/configs/finetune_vision.yaml): `{' '.join(cfg.finetune_args) or '(none)'}`",
        *(f"- {LABELS[m]} also: `{' '.join(a)}`" for m, a in cfg.method_overrides.items() if m in cfg.methods),
        "",
        "![accuracy vs labels](accuracy_vs_labels.png)",
        "",
    ]
    lines += [f"![curves k={k}](curves_k{k}.png)" for k in ks]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None):
    cfg = parse_config(StudyVisionConfig, argv, default_yaml=RECIPES / "configs" / "study_vision.yaml")
    check(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "study_config.yaml")
    pretraining = {task: pretrained(cfg, task) for task in ("rotation", "mim") if task in cfg.methods}

    records, histories = [], {}
    for k in cfg.k_per_class:
        for seed in cfg.seeds:
            for method in cfg.methods:
                name = f"{method}_k{k}_seed{seed}"
                if method == "pixels_logreg":
                    result = logreg_run(cfg, k, seed)
                else:
                    run_dir = out / "runs" / name
                    init = pretraining[method][0] if method in pretraining else ""
                    args = [*cfg.finetune_args, *cfg.method_overrides.get(method, []), f"seed={seed}", f"data.k_per_class={k}", f"model.name_or_path={init}"]
                    result = run_recipe("finetune_vision.py", args, run_dir, cfg.reuse)
                    history = json.loads((run_dir / "trainer_history.json").read_text(encoding="utf-8"))
                    histories.setdefault(k, {})[name] = history
                    plot_curves({name: history}, run_dir / "curves.png", f"{LABELS[method]}, k={k}, seed {seed}")
                records.append({"method": method, "k_per_class": k, "seed": seed, **{
                    key: result[key] for key in ("test_accuracy", "test_macro_f1", "test_images", "best_step", "eval_accuracy", "train_runtime_s")
                    if key in result
                }})
                print(f"{name}: test accuracy {100 * result['test_accuracy']:.2f}%", flush=True)
                summary = summarise(records, cfg.methods, cfg.k_per_class)
                report = {"summary": summary, "runs": records,
                          "pretraining": {t: {"checkpoint": c, **i} for t, (c, i) in pretraining.items()}}
                (out / "results.json").write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
                write_markdown(cfg, summary, records, pretraining, out / "results.md")
    plot_accuracy(summary, cfg.k_per_class, out / "accuracy_vs_labels.png")
    for k, runs in histories.items():
        plot_curves(runs, out / f"curves_k{k}.png", f"fine-tuning with {k} labels per class")
    print((out / "results.md").read_text(encoding="utf-8"))
    return report


if __name__ == "__main__":
    run(main)
