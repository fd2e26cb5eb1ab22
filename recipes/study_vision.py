"""Few-label vision study: where does self-supervised pretraining help a ViT, and by how much?

    python recipes/study_vision.py [--config recipes/configs/study_vision.yaml] [key=value ...]
    python recipes/study_vision.py report_only=true     # tables and plots again, from the runs on disk

For k ∈ {1, 5, 10, 100} labelled Fashion-MNIST images per class and several seeds (every method of
a seed sees the same labelled images): a ViT from scratch, pretrained by any image objective of the
registry (rotation, mim, simclr, jigsaw ...: the method named after it), those that lend one also
with the auxiliary pretext loss (``<objective>_aux``; another objective's: ``<objective>_aux_<lender>``),
every one fine-tuned for the same fixed number of steps at the learning rate that it picks from a
small grid on validation; and, on the same split, logistic regression and kNN on pixels, and linear
probes and kNN on the frozen pretrained features ([CLS] and mean-pooled). At k=100 also a
learning-speed curve with one compute-matched point. The plan (order, rate choice, flattening
check) is :mod:`nlp_ssl.study.protocol`, the runs and the report the other studies'
(:mod:`nlp_ssl.study`). Checkpoints are inputs (``checkpoints: {rotation: <folder>}``) or
pretrained here with ``recipes/pretrain_vit.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives import registry
from nlp_ssl.study import Method, provenance, run_recipe
from nlp_ssl.study.grid import check_arguments
from nlp_ssl.study.protocol import ProtocolConfig, ProtocolStudy, check_protocol, pending_methods, run_protocol
from nlp_ssl.vision.image_finetuning import FinetuneVisionConfig
from nlp_ssl.vision.probes import frozen_knn, frozen_probe, knn_on_pixels, logreg_on_pixels

#: The pretext tasks the study can pretrain with: every image objective of the registry. Each brings the rows
#: ``<task>`` (fine-tuned from its checkpoint), ``<task>_aux`` (+ its auxiliary loss, where it lends one),
#: ``<task>_aux_<lender>`` (+ another objective's auxiliary loss), ``probe_<task>_cls``/``probe_<task>_mean``
#: and ``knn_<task>_cls``/``knn_<task>_mean``. Its checkpoint is ``checkpoints[<task>]`` when given, else
#: pretrained here with ``pretrain_args`` (+ ``objective_pretrain_args[<task>]``).
PRETEXTS = {name: registry.OBJECTIVES[name] for name in registry.names("image")}
POOLING = {"cls": "[CLS]", "mean": "mean-pooled"}
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass
class StudyVisionConfig(ProtocolConfig):
    MOVED_KEYS = {"rotation_checkpoint": "checkpoints.rotation", "mim_checkpoint": "checkpoints.mim",
                  "rotation_args": "objective_pretrain_args.rotation", "mim_args": "objective_pretrain_args.mim"}
    methods: list[str] = field(default_factory=lambda: ["scratch", "rotation", "mim", "pixels_logreg"])
    #: Pretrained checkpoints (pretrain_vit.py outputs) by objective, e.g. ``{rotation: <folder>}``; the
    #: others a method needs are pretrained here.
    checkpoints: dict[str, str | None] = field(default_factory=dict)
    #: ``key=value`` arguments of recipes/pretrain_vit.py: for every pretraining run, then for each objective's.
    pretrain_args: list[str] = field(default_factory=list)
    objective_pretrain_args: dict[str, list[str]] = field(default_factory=dict)
    #: Fine-tuning arguments of the auxiliary-loss methods (``*_aux``), after their ``finetune.aux_task``.
    aux_args: list[str] = field(default_factory=lambda: ["finetune.aux_weight=0.5"])

    def __post_init__(self):
        super().__post_init__()
        for name in ("pretrain_args", "aux_args"):
            check_arguments(name, getattr(self, name))
        for task in [*self.checkpoints, *self.objective_pretrain_args]:
            if task not in PRETEXTS:
                raise ConfigError(f"checkpoints/objective_pretrain_args: {task!r} is not an image objective; "
                                  f"choose from {list(PRETEXTS)}")
        for task, args in self.objective_pretrain_args.items():
            check_arguments(f"objective_pretrain_args.{task}", args)
        for task, path in self.checkpoints.items():
            if path and not (Path(path) / "config.json").is_file():
                raise ConfigError(f"checkpoints.{task} {path}: not a model folder (no config.json)")


def checkpoint(cfg: StudyVisionConfig, task: str) -> str:
    """The ``task`` checkpoint: given, or where this study pretrains it."""
    return cfg.checkpoints.get(task) or str(Path(cfg.output_dir) / f"pretrain_{task}")


def pretrain(cfg: StudyVisionConfig, task: str) -> dict:
    """Pretrain the ``task`` checkpoint unless it is given or already done (or only reporting)."""
    path, given = Path(checkpoint(cfg, task)), cfg.checkpoints.get(task)
    args = [f"objective={task}", *cfg.pretrain_args, *cfg.objective_pretrain_args.get(task, [])]
    if not given and not cfg.report_only:
        return {"checkpoint": str(path), "how": f"pretrained here with `{' '.join(args)}`",
                **run_recipe("pretrain_vit", args, path, cfg.reuse)}
    results = path / "all_results.json"
    info = json.loads(results.read_text(encoding="utf-8")) if results.is_file() else {}
    return {"checkpoint": str(path), "how": "given as input" if given else f"pretrained here with `{' '.join(args)}`", **info}


def check_weights(cfg: StudyVisionConfig, study: ProtocolStudy, pretraining: dict) -> None:
    """A checkpoint folder kept without its weights (git keeps a study's checkpoint config and results only)
    serves the report and the finished runs; a run still to come from it is refused before anything runs."""
    missing = [task for task, info in pretraining.items()
               if not any((Path(info["checkpoint"]) / name).is_file() for name in WEIGHTS)]
    if not missing or cfg.report_only:
        return
    pending = pending_methods(cfg, study)
    for task in missing:
        if any(m == task or m.startswith((f"{task}_", f"probe_{task}_", f"knn_{task}_")) for m in pending):
            raise ConfigError(f"{task} checkpoint {checkpoint(cfg, task)}: no weights ({WEIGHTS[0]}), and runs from it are "
                              f"still to come; pretrain it again (move the folder away) or set checkpoints.{task}")


def describe(task: str, info: dict) -> str:
    runtime = info.get("train_runtime_s")
    return (
        f"- {task}: `{info['checkpoint']}` ({info['how']}), {info.get('steps', '?')} steps"
        + (f", {runtime / 60:.1f} min" if isinstance(runtime, (int, float)) else "")
        + "".join(f", {k}={info[k]:.4f}" for k in ("eval_loss", "eval_accuracy") if isinstance(info.get(k), float))
    )


def main(argv=None):
    cfg = parse_config(StudyVisionConfig, argv, default_yaml=Path(__file__).parent / "configs" / "study_vision.yaml")
    start = {task: [f"model.name_or_path={checkpoint(cfg, task)}"] for task in PRETEXTS}
    scratch = ["model.name_or_path="]
    aux = {task: [f"finetune.aux_task={task}", *cfg.aux_args] for task, o in PRETEXTS.items() if o.aux}
    default_aux = next(iter(aux))  # what finetune.aux_task=auto gives a model from scratch
    methods = {
        "scratch": Method("ViT from scratch", scratch),
        **{task: Method(f"ViT pretrained: {o.title}", start[task]) for task, o in PRETEXTS.items()},
        "scratch_aux": Method(f"ViT from scratch + auxiliary {default_aux} loss", [*scratch, *aux[default_aux]]),
        **{f"{task}_aux": Method(f"ViT pretrained: {PRETEXTS[task].title} + auxiliary {task} loss", [*start[task], *args])
           for task, args in aux.items()},
        **{f"{task}_aux_{lender}": Method(f"ViT pretrained: {o.title} + auxiliary {lender} loss", [*start[task], *args])
           for task, o in PRETEXTS.items() for lender, args in aux.items() if lender != task},
        "pixels_logreg": Method("logistic regression on raw pixels", baseline=logreg_on_pixels),
        "pixels_knn": Method("kNN on raw pixels (neighbours chosen on validation)", baseline=knn_on_pixels),
        **{f"probe_{task}_{pool}": Method(f"linear probe on frozen {task} features ({pooled})",
                                          baseline=frozen_probe(checkpoint(cfg, task), pool))
           for task in PRETEXTS for pool, pooled in POOLING.items()},
        **{f"knn_{task}_{pool}": Method(f"kNN on frozen {task} features ({pooled}, cosine; neighbours chosen on validation)",
                                        baseline=frozen_knn(checkpoint(cfg, task), pool))
           for task in PRETEXTS for pool, pooled in POOLING.items()},
    }
    uses = {task: [m for m in cfg.methods if m.startswith((task, f"probe_{task}", f"knn_{task}"))] for task in PRETEXTS}
    study = ProtocolStudy("Few-label image classification (Fashion-MNIST)", "finetune_vision", FinetuneVisionConfig, methods,
                          command=provenance.command_line(__file__, argv))
    check_protocol(cfg, study)  # before any pretraining
    pretraining = {task: pretrain(cfg, task) for task in PRETEXTS if uses[task] or cfg.compute_matched == task}
    study.pretrain_seconds = {m: info["train_runtime_s"] for task, info in pretraining.items()
                              for m in methods if m.startswith(task) and info.get("train_runtime_s")}
    study.sections = {"Pretraining": [describe(t, info) for t, info in pretraining.items()]} if pretraining else {}
    study.extra = {"pretraining": pretraining}
    check_weights(cfg, study, pretraining)
    results = run_protocol(cfg, study)
    print((Path(cfg.output_dir) / "results.md").read_text(encoding="utf-8"))
    return results


if __name__ == "__main__":
    run(main)
