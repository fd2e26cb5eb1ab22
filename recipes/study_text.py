"""The few-label study: test accuracy against labels per class, for pretraining vs no pretraining.

    python recipes/study_text.py pretrained=outputs/pretrain_mlm [budgets=8,32,128] [seeds=0,1,2] ...

For every label budget k and seed it runs, on the same k examples per class and the same
validation and test sets: ``scratch`` (the checkpoint's architecture, fresh weights), ``pretrained``
(plain fine-tuning), ``pretrained_aux`` (+ the auxiliary LM loss, GPT-1 §3.2), ``tfidf`` (TF-IDF +
logistic regression) and, if asked, ``frozen_probe`` (logistic regression on the frozen checkpoint's
mean-pooled states). Fine-tuning runs are ``recipes/finetune_text.py`` called in this process; a run
whose ``all_results.json`` exists is reused, so an interrupted study continues where it stopped.

Writes to ``output_dir``: ``results.json`` (every run + mean ± std), ``results.md``,
``accuracy_vs_labels.png`` and ``curves/<run>.png`` (train/validation loss and validation accuracy,
with the best step marked), which show overfitting and what best-checkpointing recovers.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import finetune_text  # noqa: E402 - the sibling recipe

from nlp_ssl.cli import run  # noqa: E402
from nlp_ssl.config import parse_config  # noqa: E402
from nlp_ssl.errors import ConfigError  # noqa: E402

METHODS = ("scratch", "pretrained", "pretrained_aux", "tfidf", "frozen_probe")
NEURAL = {"scratch": ["model.load_weights=false"], "pretrained": [], "pretrained_aux": ["finetune.aux_lm=auto"]}


@dataclass
class StudyConfig:
    #: The pretrained checkpoint folder (e.g. from recipes/pretrain_mlm.py or pretrain_clm.py).
    pretrained: str = "outputs/pretrain_mlm"
    output_dir: str = "results/text_study"
    budgets: list[int] = field(default_factory=lambda: [8, 32, 128])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: ["scratch", "pretrained", "pretrained_aux", "tfidf"])
    #: ``key=value`` overrides given to every fine-tuning run (finetune_text.py keys), e.g. max_steps=200.
    finetune: list[str] = field(default_factory=list)
    #: Extra overrides per method, e.g. ``{scratch: [learning_rate=1e-3]}``.
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    #: Reuse finished runs found in output_dir.
    reuse: bool = True


def _run_name(method: str, k: int, seed: int) -> str:
    return f"{method}_k{k}_s{seed}"


def finetune_args(cfg: StudyConfig, method: str, k: int, seed: int, out: Path) -> list[str]:
    return [
        f"model.name_or_path={cfg.pretrained}", *cfg.finetune, *NEURAL[method], *cfg.method_overrides.get(method, []),
        f"data.k_per_class={k}", f"seed={seed}", f"output_dir={out}", "progress_bar=false",
        "resume=auto",  # an interrupted study continues its unfinished run
    ]


def run_neural(cfg: StudyConfig, method: str, k: int, seed: int, runs: Path) -> dict:
    out = runs / _run_name(method, k, seed)
    done = out / "all_results.json"
    if not (cfg.reuse and done.is_file()):
        if not cfg.reuse:
            shutil.rmtree(out, ignore_errors=True)
        finetune_text.main(finetune_args(cfg, method, k, seed, out))
    results = json.loads(done.read_text())
    history = json.loads((out / "trainer_history.json").read_text())
    return {**_summarise_history(history, results), "history_file": str(out / "trainer_history.json")}


def _summarise_history(history: list[dict], results: dict) -> dict:
    """Best vs last: validation accuracy and test accuracy of each, and whether val loss rose."""
    evals = [h for h in history if "eval_accuracy" in h]
    # The trainer re-evaluates the best model after the last step: drop that repeat.
    if len(evals) > 1 and evals[-1]["step"] == evals[-2]["step"]:
        evals = evals[:-1]
    val_loss = [h.get("eval_cls_loss", h["eval_loss"]) for h in evals]
    best = int(np.argmax([h["eval_accuracy"] for h in evals])) if evals else None
    lowest = int(np.argmin(val_loss)) if evals else None
    return {
        "test_accuracy": results.get("test_accuracy"),
        "test_macro_f1": results.get("test_macro_f1"),
        "last_test_accuracy": results.get("last_test_accuracy"),
        "best_step": results.get("best_step"),
        "last_step": evals[-1]["step"] if evals else None,
        "best_val_accuracy": evals[best]["eval_accuracy"] if evals else None,
        "last_val_accuracy": evals[-1]["eval_accuracy"] if evals else None,
        "min_val_loss_step": evals[lowest]["step"] if evals else None,
        "min_val_loss": val_loss[lowest] if evals else None,
        "last_val_loss": val_loss[-1] if evals else None,
        "train_runtime_s": results.get("train_runtime_s"),
    }


def run_linear(cfg: StudyConfig, method: str, k: int, seed: int) -> dict:
    """TF-IDF or frozen-probe logistic regression on the very rows the fine-tuning runs train on."""
    from nlp_ssl.baselines import frozen_embeddings_logreg, tfidf_logreg

    ft = parse_config(finetune_text.FinetuneTextConfig, finetune_args(cfg, "pretrained", k, seed, Path("unused")),
                      default_yaml=Path(finetune_text.__file__).parent / "configs" / "finetune_text.yaml")
    splits, names, where = finetune_text.load_splits(ft.data)
    train, _ = finetune_text.split_pool(splits["pool"], names, ft.data, seed, where)
    if splits["test"] is None:
        raise ConfigError("the study needs a test set: set data.test_file in finetune (or use the built-in task)")
    start = time.perf_counter()
    args = (train["text"][:], train["label"][:], splits["test"]["text"][:], splits["test"]["label"][:])
    if method == "tfidf":
        scores = tfidf_logreg(*args, seed=seed)
    else:
        scores = frozen_embeddings_logreg(cfg.pretrained, *args, seed=seed, max_length=ft.data.max_length)
    return {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"], "train_runtime_s": time.perf_counter() - start}


def summarise(records: list[dict]) -> dict:
    """{method: {k: {metric: [mean, std, n]}}} over seeds (std with ddof=1; 0 for one seed)."""
    out: dict = {}
    keys = ("test_accuracy", "test_macro_f1", "last_test_accuracy", "best_val_accuracy", "last_val_accuracy", "best_step")
    for rec in records:
        out.setdefault(rec["method"], {}).setdefault(str(rec["k"]), []).append(rec)
    summary = {}
    for method, by_k in out.items():
        summary[method] = {}
        for k, recs in by_k.items():
            summary[method][k] = {}
            for key in keys:
                values = [r[key] for r in recs if r.get(key) is not None]
                if values:
                    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                    summary[method][k][key] = [float(np.mean(values)), std, len(values)]
    return summary


def write_markdown(path: Path, cfg: StudyConfig, records: list[dict], summary: dict) -> None:
    budgets = [str(k) for k in sorted(cfg.budgets)]
    methods = [m for m in cfg.methods if m in summary]

    def cell(method, k, key, scale=100.0):
        value = summary.get(method, {}).get(k, {}).get(key)
        return f"{value[0] * scale:.1f} ± {value[1] * scale:.1f}" if value else "–"

    lines = [
        "# Few-label text classification study", "",
        f"Pretrained checkpoint: `{cfg.pretrained}`. Seeds: {cfg.seeds}. Mean ± std over seeds (percent).", "",
        "## Test accuracy (best checkpoint by validation accuracy)", "",
        "| method | " + " | ".join(f"k={k}" for k in budgets) + " |", "|---" * (len(budgets) + 1) + "|",
        *[f"| {m} | " + " | ".join(cell(m, k, "test_accuracy") for k in budgets) + " |" for m in methods],
        "", "## Test macro-F1", "",
        "| method | " + " | ".join(f"k={k}" for k in budgets) + " |", "|---" * (len(budgets) + 1) + "|",
        *[f"| {m} | " + " | ".join(cell(m, k, "test_macro_f1") for k in budgets) + " |" for m in methods],
        "", "## Best-checkpointing: best step vs last step", "",
        "Validation and test accuracy of the model kept (best validation accuracy) and of the last step; "
        "`val loss ↑` counts runs whose validation loss ended above its minimum while the training loss fell.", "",
        "| run | best step | last step | val acc best / last | test acc best / last | min val loss (step) → last | val loss ↑ |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.get("best_step") is None:
            continue
        rising = r["last_val_loss"] > r["min_val_loss"] + 1e-6 and r.get("train_loss_fell", True)
        lines.append(
            f"| {r['run']} | {r['best_step']} | {r['last_step']} | {r['best_val_accuracy'] * 100:.1f} / {r['last_val_accuracy'] * 100:.1f} | "
            f"{r['test_accuracy'] * 100:.1f} / {r['last_test_accuracy'] * 100:.1f} | {r['min_val_loss']:.3f} ({r['min_val_loss_step']}) → "
            f"{r['last_val_loss']:.3f} | {'yes' if rising else 'no'} |"
        )
    lines += ["", "Plots: `accuracy_vs_labels.png`, per-run curves in `curves/`.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def plot_accuracy(path: Path, cfg: StudyConfig, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method in cfg.methods:
        if method not in summary:
            continue
        ks = [k for k in sorted(cfg.budgets) if str(k) in summary[method] and "test_accuracy" in summary[method][str(k)]]
        mean = [summary[method][str(k)]["test_accuracy"][0] * 100 for k in ks]
        std = [summary[method][str(k)]["test_accuracy"][1] * 100 for k in ks]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(cfg.budgets, [str(k) for k in cfg.budgets])
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("few-label text classification")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(path: Path, history: list[dict], title: str) -> bool:
    """Train loss, validation (classification) loss and validation accuracy against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
    evals = [h for h in history if "eval_accuracy" in h]
    if len(evals) > 1 and evals[-1]["step"] == evals[-2]["step"]:
        evals = evals[:-1]
    if not train and not evals:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    if train:
        left.plot(*zip(*train), label="train loss (total)")
    if evals:
        steps = [h["step"] for h in evals]
        left.plot(steps, [h.get("eval_cls_loss", h["eval_loss"]) for h in evals], "o-", markersize=3, label="validation loss (classification)")
        right.plot(steps, [h["eval_accuracy"] * 100 for h in evals], "o-", markersize=3, color="C2", label="validation accuracy")
        best = max(evals, key=lambda h: h["eval_accuracy"])["step"]
        for ax in (left, right):
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label="best step")
    left.set_xlabel("step"), left.set_ylabel("loss"), left.legend(fontsize=8), left.grid(alpha=0.3)
    right.set_xlabel("step"), right.set_ylabel("accuracy (%)"), right.legend(fontsize=8), right.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv=None):
    cfg = parse_config(StudyConfig, argv, default_yaml=Path(__file__).parent / "configs" / "study_text.yaml")
    unknown = sorted(set(cfg.methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"methods: {unknown} are not among {list(METHODS)}")
    if not cfg.budgets or any(k <= 0 for k in cfg.budgets):
        raise ConfigError(f"budgets must be positive labels-per-class counts, got {cfg.budgets}")
    if not (Path(cfg.pretrained) / "config.json").is_file():
        raise ConfigError(f"pretrained {cfg.pretrained}: not a checkpoint folder (no config.json); run recipes/pretrain_mlm.py first")
    out = Path(cfg.output_dir)
    (out / "curves").mkdir(parents=True, exist_ok=True)
    records = []
    for k in cfg.budgets:
        for seed in cfg.seeds:
            for method in cfg.methods:
                name = _run_name(method, k, seed)
                print(f"[study] {name}", flush=True)
                if method in NEURAL:
                    rec = run_neural(cfg, method, k, seed, out / "runs")
                    history = json.loads(Path(rec["history_file"]).read_text())
                    trains = [h["train_loss"] for h in history if "train_loss" in h]
                    rec["train_loss_fell"] = bool(trains) and trains[-1] < trains[0]
                    plot_curves(out / "curves" / f"{name}.png", history, name)
                else:
                    rec = run_linear(cfg, method, k, seed)
                records.append({"run": name, "method": method, "k": k, "seed": seed, **rec})
                summary = summarise(records)
                (out / "results.json").write_text(json.dumps({"config": vars(cfg), "summary": summary, "runs": records}, indent=1))
    write_markdown(out / "results.md", cfg, records, summary)
    plot_accuracy(out / "accuracy_vs_labels.png", cfg, summary)
    print((out / "results.md").read_text())
    return summary


if __name__ == "__main__":
    run(main)
