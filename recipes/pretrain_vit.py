"""Pretrain a small ViT without labels: rotation prediction (RotNet), masked image modelling (SimMIM),
contrastive learning (SimCLR, MICLe positives with ``simclr.group_column``), jigsaw puzzles, or your own.

    accelerate launch recipes/pretrain_vit.py [--config recipes/configs/pretrain_vit_simclr.yaml] [key=value ...]
    python recipes/pretrain_vit.py objective=mim mim.mask_ratio=0.6

Every objective runs on the shared :class:`nlp_ssl.trainer.Trainer`; only the collator, the task (loss)
and the HF head differ (the objective's registry entry, :mod:`nlp_ssl.objectives.registry`). The output
folder is a plain HF checkpoint with its ``ViTImageProcessor``: ``ViTForImageClassification`` (4 rotation
classes, or one class per jigsaw permutation), ``ViTForMaskedImageModeling``, or ``ViTModel`` (SimCLR,
the pooler being the projection head's first layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nlp_ssl.cli import run
from nlp_ssl.config import parse_config
from nlp_ssl.data.card import data_card
from nlp_ssl.data.image_splits import ImagePoolConfig, load_image_pool
from nlp_ssl.models import ModelConfig
from nlp_ssl.objectives.registry import ImageSetup, find_objective, objective_settings, with_objective_settings
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator
from nlp_ssl.training.reporting import RunDescription, run_summary
from nlp_ssl.vision.image import ImageConfig, check_image_config, make_processor


@dataclass
class PretrainImageConfig(TrainConfig):
    MOVED_KEYS = {"task": "objective"}
    #: A registered image objective (rotation, mim, simclr, jigsaw) or your own: path/to/file.py defining OBJECTIVE.
    objective: str = "rotation"
    data: ImagePoolConfig = field(default_factory=ImagePoolConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="vit"))


PretrainViTConfig = with_objective_settings(PretrainImageConfig, "image")  # + rotation:, mim:, simclr:, jigsaw: ...


def main(argv=None):
    cfg = parse_config(PretrainViTConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_vit.yaml")
    check_image_config(cfg.image)
    objective = find_objective(cfg.objective, "image")
    settings = objective_settings(cfg, objective)
    setup = ImageSetup(cfg.model, cfg.image, cfg.seed, cfg.data.augment)
    if objective.check:  # before any data is read
        objective.check(settings, setup)
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        setup.splits = load_image_pool(cfg.data, cfg.seed, extra_columns=objective.columns(settings) if objective.columns else ())
        parts = objective.parts(settings, setup)

    image, splits = cfg.image, setup.splits
    description = RunDescription(
        objective=parts.summary,
        data=f"{cfg.data.source} [{cfg.data.split}], {len(splits['train'])} unlabeled training images",
        pipeline_tag=parts.pipeline_tag,
        **data_card(cfg.data.source),
        notes=[f"ViT {image.image_size}x{image.image_size}, {image.num_channels} channel(s), patch {image.patch_size}"],
    )
    trainer = Trainer(
        cfg, parts.task, splits["train"], parts.collator, eval_dataset=splits["validation"],
        eval_collator=parts.eval_collator, processor=make_processor(image), accelerator=accelerator,
        description=description, run_config=cfg,
    )
    results = trainer.fit()
    if accelerator.is_main_process:
        print(run_summary(results, cfg.output_dir, ("steps", "eval_loss", "eval_accuracy", "eval_retrieval_accuracy")))
    return results


if __name__ == "__main__":
    run(main)
