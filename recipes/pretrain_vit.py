"""Pretrain a small ViT without labels: rotation prediction (RotNet), masked image modelling (SimMIM),
contrastive learning (SimCLR, MICLe positives with ``simclr.group_column``) or jigsaw puzzles.

    accelerate launch recipes/pretrain_vit.py [--config recipes/configs/pretrain_vit_simclr.yaml] [key=value ...]

Every objective runs on the shared :class:`nlp_ssl.trainer.Trainer`; only the collator, the task (loss)
and the HF head differ (:mod:`nlp_ssl.vision.pretraining`). The output folder is a plain HF checkpoint
with its ``ViTImageProcessor``: ``ViTForImageClassification`` (4 rotation classes, or one class per
jigsaw permutation), ``ViTForMaskedImageModeling``, or ``ViTModel`` (SimCLR, the pooler being the
projection head's first layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.data.card import data_card
from nlp_ssl.data.image_splits import ImagePoolConfig, load_image_pool
from nlp_ssl.models import ModelConfig
from nlp_ssl.reporting import RunDescription, run_summary
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator
from nlp_ssl.vision.image import ImageConfig, check_image_config, make_processor
from nlp_ssl.vision.pretraining import (
    JigsawConfig,
    MIMConfig,
    RotationConfig,
    SimCLRConfig,
    check_jigsaw,
    check_mim,
    jigsaw_objective,
    mim_objective,
    rotation_objective,
    simclr_columns,
    simclr_objective,
)


@dataclass
class PretrainViTConfig(TrainConfig):
    task: Literal["rotation", "mim", "simclr", "jigsaw"] = "rotation"
    data: ImagePoolConfig = field(default_factory=ImagePoolConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="vit"))
    rotation: RotationConfig = field(default_factory=RotationConfig)
    mim: MIMConfig = field(default_factory=MIMConfig)
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    jigsaw: JigsawConfig = field(default_factory=JigsawConfig)


def main(argv=None):
    cfg = parse_config(PretrainViTConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_vit.yaml")
    check_image_config(cfg.image)
    if cfg.task == "mim":  # before any data is read
        check_mim(cfg.image, cfg.mim)
    elif cfg.task == "jigsaw":
        check_jigsaw(cfg.image, cfg.jigsaw)
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        splits = load_image_pool(cfg.data, cfg.seed, extra_columns=simclr_columns(cfg.simclr) if cfg.task == "simclr" else ())
        if cfg.task == "rotation":
            objective = rotation_objective(cfg.model, cfg.image, cfg.rotation, cfg.seed, cfg.data.augment)
        elif cfg.task == "mim":
            objective = mim_objective(cfg.model, cfg.image, cfg.mim, cfg.seed, cfg.data.augment)
        elif cfg.task == "simclr":
            objective = simclr_objective(cfg.model, cfg.image, cfg.simclr, cfg.seed, splits)
        else:
            objective = jigsaw_objective(cfg.model, cfg.image, cfg.jigsaw, cfg.seed, cfg.data.augment)

    image = cfg.image
    description = RunDescription(
        objective=objective.summary,
        data=f"{cfg.data.source} [{cfg.data.split}], {len(splits['train'])} unlabeled training images",
        pipeline_tag="image-classification" if cfg.task in ("rotation", "jigsaw") else None,
        **data_card(cfg.data.source),
        notes=[f"ViT {image.image_size}x{image.image_size}, {image.num_channels} channel(s), patch {image.patch_size}"],
    )
    trainer = Trainer(
        cfg, objective.task, splits["train"], objective.collator, eval_dataset=splits["validation"],
        eval_collator=objective.eval_collator, processor=make_processor(image), accelerator=accelerator,
        description=description, run_config=cfg,
    )
    results = trainer.fit()
    if accelerator.is_main_process:
        print(run_summary(results, cfg.output_dir, ("steps", "eval_loss", "eval_accuracy", "eval_retrieval_accuracy")))
    return results


if __name__ == "__main__":
    run(main)
