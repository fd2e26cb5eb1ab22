"""Pretrain a small ViT without labels: rotation prediction (RotNet) or masked image modelling (SimMIM).

    accelerate launch recipes/pretrain_vit.py [--config recipes/configs/pretrain_vit.yaml] [task=rotation|mim] [key=value ...]

Both objectives run on the shared :class:`nlp_ssl.trainer.Trainer`; only the collator, the task (loss)
and the HF head differ. The output folder is a plain HF checkpoint with its ``ViTImageProcessor``:
``ViTForImageClassification`` (4 rotation classes) or ``ViTForMaskedImageModeling``.

The helpers here (image settings, the unlabeled pool, the processor) are shared with
``finetune_vision.py`` and ``study_vision.py``, which import this file as a sibling module.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Run as a script, the sibling recipes are importable; imported as ``recipes.pretrain_vit``, so is the package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nlp_ssl.cli import run  # noqa: E402
from nlp_ssl.config import check_ranges, parse_config  # noqa: E402
from nlp_ssl.data.cache import cache_root  # noqa: E402
from nlp_ssl.data.images import FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_image_dataset  # noqa: E402
from nlp_ssl.errors import ConfigError, DataError  # noqa: E402
from nlp_ssl.models import ModelConfig, build_model  # noqa: E402
from nlp_ssl.objectives import MaskedImageCollator, RotationCollator  # noqa: E402
from nlp_ssl.objectives.mim import check_mask_sizes  # noqa: E402
from nlp_ssl.reporting import RunDescription  # noqa: E402
from nlp_ssl.tasks.vision import ImageClassificationTask, MaskedImageModelingTask  # noqa: E402
from nlp_ssl.trainer import TrainConfig, Trainer, make_accelerator  # noqa: E402

#: Rotation class k = k quarter turns counter-clockwise (see nlp_ssl.objectives.rotation).
ROTATION_LABELS = {0: "0", 1: "90", 2: "180", 3: "270"}


@dataclass
class ImageConfig:
    """What the ViT sees; saved as the checkpoint's ViTImageProcessor so inference matches training."""

    image_size: int = 28
    patch_size: int = 4
    #: 1 for grayscale. HF pipelines convert PIL inputs to RGB, so a 1-channel model takes H×W×1
    #: arrays in ``pipeline(...)``; use 3 to accept PIL images directly (gray is replicated).
    num_channels: int = 1
    mean: list[float] = field(default_factory=lambda: list(FASHION_MNIST_MEAN))
    std: list[float] = field(default_factory=lambda: list(FASHION_MNIST_STD))

    def __post_init__(self):
        check_ranges(self, image_size="(0, inf)", patch_size="(0, inf)")


@dataclass
class ImagePoolConfig:
    #: ``fashion_mnist``, ``digits``, an image folder, a ``save_to_disk`` folder or a Hub dataset.
    source: str = "fashion_mnist"
    split: str = "train"
    image_column: str | None = None
    #: Images carved out (seeded) for validation.
    validation_images: int = 2000
    max_train_images: int | None = None
    #: Random resized crop + horizontal flip on training images.
    augment: bool = False
    cache_dir: str | None = None

    def __post_init__(self):
        check_ranges(self, validation_images="(0, inf)", max_train_images="(0, inf)")


@dataclass
class RotationConfig:
    #: ``all``: each image at the four rotations (RotNet); ``one``: one random rotation per image.
    mode: Literal["all", "one"] = "all"


@dataclass
class MIMConfig:
    #: Side of the square blocks that are hidden; a multiple of image.patch_size dividing image.image_size.
    mask_patch_size: int = 4
    mask_ratio: float = 0.5

    def __post_init__(self):
        check_ranges(self, mask_patch_size="(0, inf)", mask_ratio="(0, 1)")


@dataclass
class PretrainViTConfig(TrainConfig):
    task: Literal["rotation", "mim"] = "rotation"
    data: ImagePoolConfig = field(default_factory=ImagePoolConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="vit"))
    rotation: RotationConfig = field(default_factory=RotationConfig)
    mim: MIMConfig = field(default_factory=MIMConfig)


# ------------------------------------------------------------------------------- shared helpers


def check_image_config(image: ImageConfig) -> None:
    """Fail before any data is read when the ViT geometry cannot work."""
    for name in ("image_size", "patch_size"):
        if getattr(image, name) <= 0:
            raise ConfigError(f"image.{name} must be a positive integer, got {getattr(image, name)}")
    if image.image_size % image.patch_size:
        raise ConfigError(
            f"image.patch_size {image.patch_size} does not divide image.image_size {image.image_size}; "
            f"the ViT needs a whole grid of patches (try a divisor of {image.image_size})"
        )
    if image.num_channels not in (1, 3):
        raise ConfigError(f"image.num_channels must be 1 or 3, got {image.num_channels}")
    for name in ("mean", "std"):
        values = getattr(image, name)
        if len(values) not in (1, image.num_channels):
            raise ConfigError(f"image.{name} needs 1 or {image.num_channels} values, got {values}")
    if any(s <= 0 for s in image.std):
        raise ConfigError(f"image.std must be positive, got {image.std}")


def channel_stats(values: list[float], num_channels: int) -> list[float]:
    return list(values) * num_channels if len(values) == 1 else list(values)


def vit_fields(image: ImageConfig) -> dict:
    """The HF ViT config fields that the image settings decide."""
    return {"image_size": image.image_size, "patch_size": image.patch_size, "num_channels": image.num_channels}


def make_processor(image: ImageConfig):
    """The processor saved beside the model: resize, scale to [0, 1], normalise as in training."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        do_resize=True,
        size={"height": image.image_size, "width": image.image_size},
        do_rescale=True,
        do_normalize=True,
        image_mean=channel_stats(image.mean, image.num_channels),
        image_std=channel_stats(image.std, image.num_channels),
    )


def load_images(source: str, split: str, cache_dir: str | None, image_column: str | None = None, label_column: str | None = None):
    """Any image source as a Dataset with an ``image`` column (and ``label`` when it has one)."""
    root = cache_root(cache_dir)
    return load_image_dataset(source, split, cache_dir=root, image_column=image_column, label_column=label_column)


def load_image_pool(data: ImagePoolConfig, seed: int):
    """``{"train", "validation"}`` of unlabeled images (labels, if any, are dropped)."""
    from datasets import DatasetDict

    pool = load_images(data.source, data.split, data.cache_dir, data.image_column)
    pool = pool.select_columns(["image"])
    if data.validation_images <= 0:
        raise ConfigError(f"data.validation_images must be positive, got {data.validation_images}")
    if data.validation_images >= len(pool):
        raise DataError(
            f"data.source {data.source}: {len(pool)} images, not enough to hold out "
            f"data.validation_images={data.validation_images} for validation"
        )
    splits = pool.train_test_split(test_size=data.validation_images, seed=seed, shuffle=True)
    train = splits["train"]
    if data.max_train_images:
        train = train.select(range(min(data.max_train_images, len(train))))
    return DatasetDict(train=train, validation=splits["test"])


# ----------------------------------------------------------------------------------------- main


def build_objective(cfg: PretrainViTConfig):
    """(model, task, train collator, eval collator) for ``cfg.task``."""
    image = cfg.image
    stats = dict(num_channels=image.num_channels, mean=image.mean, std=image.std)
    if cfg.task == "rotation":
        model = build_model(
            cfg.model, "image_classification", **vit_fields(image),
            num_labels=len(ROTATION_LABELS), id2label=dict(ROTATION_LABELS),
            label2id={v: k for k, v in ROTATION_LABELS.items()},
        )
        train = RotationCollator(image.image_size, mode=cfg.rotation.mode, seed=cfg.seed, augment=cfg.data.augment, **stats)
        evaluation = RotationCollator(image.image_size, mode="all", seed=cfg.seed, **stats)
        return model, ImageClassificationTask(model), train, evaluation
    try:
        train = MaskedImageCollator(
            image.image_size, image.patch_size, cfg.mim.mask_patch_size, cfg.mim.mask_ratio,
            seed=cfg.seed, augment=cfg.data.augment, **stats,
        )
        evaluation = MaskedImageCollator(
            image.image_size, image.patch_size, cfg.mim.mask_patch_size, cfg.mim.mask_ratio, seed=cfg.seed, **stats
        )
    except ValueError as err:
        raise ConfigError(f"mim: {err}") from None
    # encoder_stride = patch size: SimMIM's one-layer decoder maps each token back to its own patch.
    model = build_model(cfg.model, "masked_image_modeling", **vit_fields(image), encoder_stride=image.patch_size)
    return model, MaskedImageModelingTask(model), train, evaluation


def main(argv=None):
    cfg = parse_config(PretrainViTConfig, argv, default_yaml=Path(__file__).parent / "configs" / "pretrain_vit.yaml")
    check_image_config(cfg.image)
    if cfg.task == "mim":  # before any data is read
        try:
            check_mask_sizes(cfg.image.image_size, cfg.image.patch_size, cfg.mim.mask_patch_size)
        except ValueError as err:
            raise ConfigError(f"mim: {err}") from None
    accelerator = make_accelerator(cfg)

    with accelerator.main_process_first():
        splits = load_image_pool(cfg.data, cfg.seed)
        model, task, collator, eval_collator = build_objective(cfg)

    objective = {
        "rotation": f"rotation prediction (RotNet, 4 rotations, mode {cfg.rotation.mode})",
        "mim": f"masked image modelling (SimMIM, {cfg.mim.mask_ratio:.0%} of {cfg.mim.mask_patch_size}px blocks masked, L1)",
    }[cfg.task]
    description = RunDescription(
        objective=objective,
        data=f"{cfg.data.source} [{cfg.data.split}], {len(splits['train'])} unlabeled training images",
        pipeline_tag="image-classification" if cfg.task == "rotation" else None,
        notes=[f"ViT {cfg.image.image_size}x{cfg.image.image_size}, {cfg.image.num_channels} channel(s), patch {cfg.image.patch_size}"],
    )
    trainer = Trainer(
        cfg, task, splits["train"], collator, eval_dataset=splits["validation"], eval_collator=eval_collator,
        processor=make_processor(cfg.image), accelerator=accelerator, description=description, run_config=cfg,
    )
    results = trainer.fit()
    if accelerator.is_main_process:
        print({k: results[k] for k in ("steps", "eval_loss", "eval_accuracy") if k in results})
    return results


if __name__ == "__main__":
    run(main)
