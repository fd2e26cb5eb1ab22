"""Few-label vision study: does self-supervised pretraining help a ViT when labels are scarce?

    python recipes/study_vision.py [--config recipes/configs/study_vision.yaml] [key=value ...]

For every k and seed it fine-tunes the same ViT from scratch, from a rotation (RotNet) checkpoint
and from a masked-image-modelling (SimMIM) checkpoint, and fits a logistic regression on the raw
pixels of the same k images per class; all are scored on the same test images. Checkpoints are
inputs (``rotation_checkpoint``, ``mim_checkpoint``) or, when empty, pretrained here with
``recipes/pretrain_vit.py``. The grid, reuse and continuation of runs, and the report
(results.json, results.md, accuracy_vs_labels.png, curves/) are :mod:`nlp_ssl.study`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.baselines import pixels_logreg
from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.data.image_splits import labelled_splits
from nlp_ssl.errors import ConfigError
from nlp_ssl.study import Method, Study, StudyConfig, run_recipe, run_study
from nlp_ssl.study.grid import check_arguments, check_methods
from nlp_ssl.vision.finetuning import FinetuneVisionConfig

TASKS = ("rotation", "mim")


@dataclass
class StudyVisionConfig(StudyConfig):
    output_dir: str = "results/vision_study"
    k_per_class: list[int] = field(default_factory=lambda: [10, 100])
    methods: list[str] = field(default_factory=lambda: ["scratch", "rotation", "mim", "pixels_logreg"])
    #: Pretrained checkpoints (pretrain_vit.py outputs); empty: pretrain one here.
    rotation_checkpoint: str | None = None
    mim_checkpoint: str | None = None
    #: ``key=value`` arguments of recipes/pretrain_vit.py: for both pretraining runs, then for each.
    pretrain_args: list[str] = field(default_factory=list)
    rotation_args: list[str] = field(default_factory=list)
    mim_args: list[str] = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        for name in ("pretrain_args", "rotation_args", "mim_args"):
            check_arguments(name, getattr(self, name))
        for task in TASKS:
            path = getattr(self, f"{task}_checkpoint")
            if path and not (Path(path) / "config.json").is_file():
                raise ConfigError(f"{task}_checkpoint {path}: not a model folder (no config.json)")


def checkpoint(cfg: StudyVisionConfig, task: str) -> str:
    """The ``task`` checkpoint: given, or where this study pretrains it."""
    return getattr(cfg, f"{task}_checkpoint") or str(Path(cfg.output_dir) / f"pretrain_{task}")


def pretrain(cfg: StudyVisionConfig, task: str) -> dict:
    """Pretrain the ``task`` checkpoint unless it is given (or already done); what is known of its pretraining."""
    path, given = Path(checkpoint(cfg, task)), getattr(cfg, f"{task}_checkpoint")
    args = [f"task={task}", *cfg.pretrain_args, *getattr(cfg, f"{task}_args")]
    if not given:
        info = run_recipe("pretrain_vit", args, path, cfg.reuse)
        return {"checkpoint": str(path), "how": f"pretrained here with `{' '.join(args)}`", **info}
    info = json.loads((path / "all_results.json").read_text(encoding="utf-8")) if (path / "all_results.json").is_file() else {}
    return {"checkpoint": str(path), "how": "given as input", **info}


def describe(task: str, info: dict) -> str:
    runtime = info.get("train_runtime_s")
    return (
        f"- {task}: `{info['checkpoint']}` ({info['how']}), {info.get('steps', '?')} steps"
        + (f", {runtime / 60:.1f} min" if isinstance(runtime, (int, float)) else "")
        + "".join(f", {k}={info[k]:.4f}" for k in ("eval_loss", "eval_accuracy") if isinstance(info.get(k), float))
    )


def pixels_baseline(ft: FinetuneVisionConfig) -> dict:
    """Logistic regression on the pixels of exactly the k-per-class images the ViTs train on."""
    splits = labelled_splits(ft.data, ft.seed)
    train, test = splits["train"], splits["test"]
    scores = pixels_logreg(list(train["image"]), train["label"], list(test["image"]), test["label"], seed=ft.seed)
    return {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"], "test_examples": len(test)}


def main(argv=None):
    cfg = parse_config(StudyVisionConfig, argv, default_yaml=Path(__file__).parent / "configs" / "study_vision.yaml")
    methods = {
        "scratch": Method("ViT from scratch", ["model.name_or_path="]),
        "rotation": Method("ViT pretrained: rotation (RotNet)", [f"model.name_or_path={checkpoint(cfg, 'rotation')}"]),
        "mim": Method("ViT pretrained: masked image modelling (SimMIM)", [f"model.name_or_path={checkpoint(cfg, 'mim')}"]),
        "pixels_logreg": Method("logistic regression on raw pixels", baseline=pixels_baseline),
    }
    study = Study("Few-label image classification (Fashion-MNIST)", "finetune_vision", FinetuneVisionConfig, methods)
    check_methods(cfg, study)  # before any pretraining
    pretraining = {task: pretrain(cfg, task) for task in TASKS if task in cfg.methods}
    study.sections = {"Pretraining": [describe(t, info) for t, info in pretraining.items()]} if pretraining else {}
    study.extra = {"pretraining": pretraining}
    results = run_study(cfg, study)
    print((Path(cfg.output_dir) / "results.md").read_text(encoding="utf-8"))
    return results


if __name__ == "__main__":
    run(main)
