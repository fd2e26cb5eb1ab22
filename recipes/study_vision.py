"""Few-label vision study: where does self-supervised pretraining help a ViT, and by how much?

    python recipes/study_vision.py [--config recipes/configs/study_vision.yaml] [key=value ...]
    python recipes/study_vision.py report_only=true     # tables and plots again, from the runs on disk

For k ∈ {1, 5, 10, 100} labelled Fashion-MNIST images per class and several seeds (every method of
a seed sees the same labelled images): a ViT from scratch, pretrained by rotation (RotNet) or by
SimMIM, each also with the auxiliary pretext loss (``*_aux``), every one fine-tuned for the same
fixed number of steps at the learning rate that it picks from a small grid on validation; and, on
the same split, logistic regression and kNN on pixels and linear probes on the frozen pretrained
features ([CLS] and mean-pooled). At k=100 also a learning-speed curve with one compute-matched
point. The protocol (order, rate choice, flattening check) is :mod:`nlp_ssl.study.vision_protocol`,
the report :mod:`nlp_ssl.study.vision_report`. Checkpoints are inputs (``rotation_checkpoint``,
``mim_checkpoint``) or pretrained here with ``recipes/pretrain_vit.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.errors import ConfigError
from nlp_ssl.study import Method, run_recipe
from nlp_ssl.study.grid import check_arguments
from nlp_ssl.study.vision_protocol import VisionProtocolConfig, VisionStudy, check_protocol, run_protocol
from nlp_ssl.study.vision_report import write_all
from nlp_ssl.vision.baselines import frozen_probe, knn_on_pixels, logreg_on_pixels
from nlp_ssl.vision.finetuning import FinetuneVisionConfig

TASKS = ("rotation", "mim")


@dataclass
class StudyVisionConfig(VisionProtocolConfig):
    methods: list[str] = field(default_factory=lambda: ["scratch", "rotation", "mim", "pixels_logreg"])
    #: Pretrained checkpoints (pretrain_vit.py outputs); empty: pretrain one here.
    rotation_checkpoint: str | None = None
    mim_checkpoint: str | None = None
    #: ``key=value`` arguments of recipes/pretrain_vit.py: for both pretraining runs, then for each.
    pretrain_args: list[str] = field(default_factory=list)
    rotation_args: list[str] = field(default_factory=list)
    mim_args: list[str] = field(default_factory=list)
    #: Fine-tuning arguments of the auxiliary-loss methods (``*_aux``), after their ``finetune.aux_task``.
    aux_args: list[str] = field(default_factory=lambda: ["finetune.aux_weight=0.5"])

    def __post_init__(self):
        super().__post_init__()
        for name in ("pretrain_args", "rotation_args", "mim_args", "aux_args"):
            check_arguments(name, getattr(self, name))
        for task in TASKS:
            path = getattr(self, f"{task}_checkpoint")
            if path and not (Path(path) / "config.json").is_file():
                raise ConfigError(f"{task}_checkpoint {path}: not a model folder (no config.json)")


def checkpoint(cfg: StudyVisionConfig, task: str) -> str:
    """The ``task`` checkpoint: given, or where this study pretrains it."""
    return getattr(cfg, f"{task}_checkpoint") or str(Path(cfg.output_dir) / f"pretrain_{task}")


def pretrain(cfg: StudyVisionConfig, task: str) -> dict:
    """Pretrain the ``task`` checkpoint unless it is given or already done (or only reporting)."""
    path, given = Path(checkpoint(cfg, task)), getattr(cfg, f"{task}_checkpoint")
    args = [f"task={task}", *cfg.pretrain_args, *getattr(cfg, f"{task}_args")]
    if not given and not cfg.report_only:
        return {"checkpoint": str(path), "how": f"pretrained here with `{' '.join(args)}`",
                **run_recipe("pretrain_vit", args, path, cfg.reuse)}
    results = path / "all_results.json"
    info = json.loads(results.read_text(encoding="utf-8")) if results.is_file() else {}
    return {"checkpoint": str(path), "how": "given as input" if given else f"pretrained here with `{' '.join(args)}`", **info}


def describe(task: str, info: dict) -> str:
    runtime = info.get("train_runtime_s")
    return (
        f"- {task}: `{info['checkpoint']}` ({info['how']}), {info.get('steps', '?')} steps"
        + (f", {runtime / 60:.1f} min" if isinstance(runtime, (int, float)) else "")
        + "".join(f", {k}={info[k]:.4f}" for k in ("eval_loss", "eval_accuracy") if isinstance(info.get(k), float))
    )


def main(argv=None):
    cfg = parse_config(StudyVisionConfig, argv, default_yaml=Path(__file__).parent / "configs" / "study_vision.yaml")
    start = {task: [f"model.name_or_path={checkpoint(cfg, task)}"] for task in TASKS}
    scratch = ["model.name_or_path="]
    aux = {task: [f"finetune.aux_task={task}", *cfg.aux_args] for task in TASKS}
    pooled = {"cls": "[CLS]", "mean": "mean-pooled"}
    methods = {
        "scratch": Method("ViT from scratch", scratch),
        "rotation": Method("ViT pretrained: rotation (RotNet)", start["rotation"]),
        "mim": Method("ViT pretrained: masked image modelling (SimMIM)", start["mim"]),
        "scratch_aux": Method("ViT from scratch + auxiliary rotation loss", [*scratch, *aux["rotation"]]),
        "rotation_aux": Method("RotNet-pretrained + auxiliary rotation loss", [*start["rotation"], *aux["rotation"]]),
        "mim_aux": Method("SimMIM-pretrained + auxiliary SimMIM loss", [*start["mim"], *aux["mim"]]),
        "pixels_logreg": Method("logistic regression on raw pixels", baseline=logreg_on_pixels),
        "pixels_knn": Method("kNN on raw pixels (neighbours chosen on validation)", baseline=knn_on_pixels),
        **{f"probe_{task}_{pool}": Method(f"linear probe on frozen {task} features ({pooled[pool]})",
                                          baseline=frozen_probe(checkpoint(cfg, task), pool))
           for task in TASKS for pool in pooled},
    }
    uses = {task: [m for m in cfg.methods if m.startswith((task, f"probe_{task}"))] for task in TASKS}
    study = VisionStudy("Few-label image classification (Fashion-MNIST)", "finetune_vision", FinetuneVisionConfig, methods)
    check_protocol(cfg, study)  # before any pretraining
    pretraining = {task: pretrain(cfg, task) for task in TASKS if uses[task] or cfg.compute_matched == task}
    study.pretrain_seconds = {m: info["train_runtime_s"] for task, info in pretraining.items()
                              for m in methods if m.startswith(task) and info.get("train_runtime_s")}
    study.sections = {"Pretraining": [describe(t, info) for t, info in pretraining.items()]} if pretraining else {}
    study.extra = {"pretraining": pretraining}
    results = run_protocol(cfg, study, lambda *found: write_all(cfg, study, *found))
    print((Path(cfg.output_dir) / "results.md").read_text(encoding="utf-8"))
    return results


if __name__ == "__main__":
    run(main)
