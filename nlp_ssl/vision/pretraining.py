"""The two pretext tasks for a ViT, each as (HF model, loss, training collator, evaluation collator).

RotNet (predict which of four rotations an image was given) and SimMIM (reconstruct hidden
patches, L1) differ only in these four parts; the trainer, data and processor are shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from nlp_ssl.config import check_ranges
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig, build_model
from nlp_ssl.objectives import MaskedImageCollator, RotationCollator
from nlp_ssl.objectives.mim import check_mask_sizes
from nlp_ssl.tasks.vision import ImageClassificationTask, MaskedImageModelingTask
from nlp_ssl.vision.image import ImageConfig, normalisation, vit_fields

#: Rotation class k = k quarter turns counter-clockwise (see nlp_ssl.objectives.rotation).
ROTATION_LABELS = {0: "0", 1: "90", 2: "180", 3: "270"}


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


class Objective(NamedTuple):
    model: object
    task: object
    collator: object
    eval_collator: object
    #: One line for the model card.
    summary: str


def check_mim(image: ImageConfig, mim: MIMConfig) -> None:
    """The mask grid must tile the image and the patch grid; checked before any data is read."""
    try:
        check_mask_sizes(image.image_size, image.patch_size, mim.mask_patch_size)
    except ValueError as err:
        raise ConfigError(f"mim: {err}") from None


def rotation_objective(model: ModelConfig, image: ImageConfig, rotation: RotationConfig, seed: int, augment: bool) -> Objective:
    """A 4-way ViT classifier; validation always sees all four rotations of each image."""
    vit = build_model(
        model, "image_classification", **vit_fields(image), num_labels=len(ROTATION_LABELS),
        id2label=dict(ROTATION_LABELS), label2id={v: k for k, v in ROTATION_LABELS.items()},
    )
    stats = normalisation(image)
    train = RotationCollator(image.image_size, mode=rotation.mode, seed=seed, augment=augment, **stats)
    evaluation = RotationCollator(image.image_size, mode="all", seed=seed, **stats)
    summary = f"rotation prediction (RotNet, 4 rotations, mode {rotation.mode})"
    return Objective(vit, ImageClassificationTask(vit), train, evaluation, summary)


def mim_objective(model: ModelConfig, image: ImageConfig, mim: MIMConfig, seed: int, augment: bool) -> Objective:
    """A ViT with SimMIM's one-layer decoder; validation masks are seeded like training's."""
    check_mim(image, mim)
    sizes = (image.image_size, image.patch_size, mim.mask_patch_size, mim.mask_ratio)
    stats = normalisation(image)
    try:
        train = MaskedImageCollator(*sizes, seed=seed, augment=augment, **stats)
        evaluation = MaskedImageCollator(*sizes, seed=seed, **stats)
    except ValueError as err:
        raise ConfigError(f"mim: {err}") from None
    # encoder_stride = patch size: SimMIM's one-layer decoder maps each token back to its own patch.
    vit = build_model(model, "masked_image_modeling", **vit_fields(image), encoder_stride=image.patch_size)
    summary = f"masked image modelling (SimMIM, {mim.mask_ratio:.0%} of {mim.mask_patch_size}px blocks masked, L1)"
    return Objective(vit, MaskedImageModelingTask(vit), train, evaluation, summary)
