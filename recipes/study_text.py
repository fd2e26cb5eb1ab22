"""The few-label text study: test accuracy against labels per class, for pretraining vs no pretraining.

    python recipes/study_text.py pretrained=outputs/pretrain_mlm [k_per_class=[8,32,128]] [seeds=[0,1,2]] ...

For every k and seed, on the same k examples per class and the same validation and test sets:
``scratch`` (the checkpoint's architecture, fresh weights), ``pretrained`` (plain fine-tuning),
``pretrained_aux`` (+ the auxiliary LM loss, GPT-1 §3.2), ``tfidf`` (TF-IDF + logistic regression)
and ``frozen_probe`` (logistic regression on the frozen checkpoint's mean-pooled states). The
fine-tuning runs are ``recipes/finetune_text.py`` subprocesses; the grid, reuse of finished runs,
continuation of unfinished ones and the report are :mod:`nlp_ssl.study`'s (results.json, results.md,
accuracy_vs_labels.png, curves/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.baselines import frozen_embeddings_logreg, tfidf_logreg
from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.errors import ConfigError
from nlp_ssl.finetune_text import FinetuneTextConfig, load_splits, split_pool
from nlp_ssl.study import Method, Study, StudyConfig, run_study


@dataclass
class StudyTextConfig(StudyConfig):
    output_dir: str = "results/text_study"
    k_per_class: list[int] = field(default_factory=lambda: [8, 32, 128])
    methods: list[str] = field(default_factory=lambda: ["scratch", "pretrained", "pretrained_aux", "tfidf"])
    #: The pretrained checkpoint folder (from recipes/pretrain_mlm.py or pretrain_clm.py).
    pretrained: str = "outputs/pretrain_mlm"


def linear_baseline(method: str, checkpoint: str):
    """TF-IDF or frozen-probe logistic regression on the very rows a fine-tuning run of the same k and seed trains on."""

    def fit(ft: FinetuneTextConfig) -> dict:
        splits, names, where = load_splits(ft.data)
        if splits["test"] is None:
            raise ConfigError("the study needs a test set: set data.test_file in finetune_args (or use the built-in task)")
        train, _ = split_pool(splits["pool"], names, ft.data, ft.seed, where)
        test = splits["test"]
        args = (train["text"][:], train["label"][:], test["text"][:], test["label"][:])
        if method == "tfidf":
            scores = tfidf_logreg(*args, seed=ft.seed)
        else:
            scores = frozen_embeddings_logreg(checkpoint, *args, seed=ft.seed, max_length=ft.data.max_length)
        return {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"], "test_examples": len(test)}

    return fit


def main(argv=None):
    cfg = parse_config(StudyTextConfig, argv, default_yaml=Path(__file__).parent / "configs" / "study_text.yaml")
    if not (Path(cfg.pretrained) / "config.json").is_file():
        raise ConfigError(
            f"pretrained {cfg.pretrained}: not a checkpoint folder (no config.json); run recipes/pretrain_mlm.py first"
        )
    start = [f"model.name_or_path={cfg.pretrained}"]
    methods = {
        "scratch": Method("from scratch (same architecture)", [*start, "model.load_weights=false"]),
        "pretrained": Method("pretrained, fine-tuned", start),
        "pretrained_aux": Method("pretrained, fine-tuned + auxiliary LM loss", [*start, "finetune.aux_lm=auto"]),
        "tfidf": Method("TF-IDF + logistic regression", baseline=linear_baseline("tfidf", cfg.pretrained)),
        "frozen_probe": Method("logistic regression on frozen states", baseline=linear_baseline("frozen_probe", cfg.pretrained)),
    }
    study = Study(
        "Few-label text classification", "finetune_text", FinetuneTextConfig, methods,
        sections={"Checkpoint": [f"Pretrained checkpoint: `{cfg.pretrained}` (its config is in its README.md)."]},
    )
    results = run_study(cfg, study)
    print((Path(cfg.output_dir) / "results.md").read_text(encoding="utf-8"))
    return results


if __name__ == "__main__":
    run(main)
