"""The pretext tasks for a ViT, each as (HF model, loss, training collator, evaluation collator).

RotNet (predict which of four rotations an image was given), SimMIM (reconstruct hidden patches,
L1), SimCLR (pull two views of an image together, with MICLe's positives from one group) and the
jigsaw puzzle (predict which permutation shuffled the tiles) differ only in these four parts; the
trainer, data and processor are shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from nlp_ssl.config import check_ranges
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig, build_model
from nlp_ssl.objectives import MaskedImageCollator, RotationCollator
from nlp_ssl.objectives.jigsaw import JigsawCollator, check_grid, permutation_labels, permutation_set
from nlp_ssl.objectives.mim import check_mask_sizes
from nlp_ssl.objectives.simclr import GroupPartners, TwoViewCollator, ViewAugmentation
from nlp_ssl.tasks.vision import ImageClassificationTask, MaskedImageModelingTask, SimCLRTask, projection_head
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


@dataclass
class SimCLRConfig:
    #: NT-Xent temperature (SimCLR used 0.1-0.5).
    temperature: float = 0.2
    #: Layers of the projection MLP, 2 or 3; the first is the ViT's pooler (saved), the rest are dropped.
    projection_layers: int = 2
    #: Width of the projection's hidden layers (default: the ViT's hidden size).
    projection_hidden: int | None = None
    projection_dim: int = 128
    #: MoCo v3: keep the random patch projection frozen (it found this steadies ViT training).
    freeze_patch_projection: bool = False
    #: MICLe: a column of case/patient ids; the second view is then another image of the same group.
    group_column: str | None = None
    views: ViewAugmentation = field(default_factory=ViewAugmentation)

    def __post_init__(self):
        check_ranges(self, temperature="(0, inf)", projection_layers="[2, 3]", projection_hidden="(0, inf)",
                     projection_dim="(0, inf)")


@dataclass
class JigsawConfig:
    #: Tiles per side (grid × grid tiles).
    grid: int = 3
    #: Size of the fixed permutation set (the classes); at most (grid²)!.
    num_permutations: int = 100
    #: Seed of the permutation set, apart from the run's seed: runs with different seeds solve the same puzzles.
    permutation_seed: int = 0
    #: Pixels cut from each cell before its tile is resized into place, so that tile edges do not line up.
    tile_jitter: int = 1

    def __post_init__(self):
        check_ranges(self, grid="[2, inf)", num_permutations="[2, inf)", tile_jitter="[0, inf)")


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


def simclr_columns(simclr: SimCLRConfig) -> list[str]:
    """Columns SimCLR reads besides the image: MICLe's group column."""
    return [simclr.group_column] if simclr.group_column else []


def vit_with_pooler(model: ModelConfig, image: ImageConfig, pooler_width: int | None):
    """A ``ViTModel`` whose pooler (dense + GELU on [CLS]) is the projection head's first layer; the
    encoder is built (or loaded) as for the other pretext tasks, the pooler is new."""
    from transformers import ViTModel

    fields = {**vit_fields(image), "pooler_act": "gelu"}
    classifier = build_model(model, "image_classification", **fields)
    config = classifier.config
    config.pooler_output_size = pooler_width or config.hidden_size
    vit = ViTModel(config)
    missing, unexpected = vit.load_state_dict(classifier.vit.state_dict(), strict=False)
    if unexpected or any(not name.startswith("pooler.") for name in missing):
        raise ConfigError(f"model: the ViT encoder did not fit a ViTModel (missing {missing}, unexpected {unexpected})")
    return vit


def simclr_objective(model: ModelConfig, image: ImageConfig, simclr: SimCLRConfig, seed: int, splits) -> Objective:
    """SimCLR on a ViT; with ``group_column``, MICLe pairs within each split. Validation views are
    drawn like training's (seeded, epoch 0), so ``eval_loss`` and ``eval_retrieval_accuracy`` compare
    across steps; their negatives are the validation batch (``eval_batch_size``)."""
    vit = vit_with_pooler(model, image, simclr.projection_hidden)
    if simclr.freeze_patch_projection:
        vit.embeddings.patch_embeddings.projection.requires_grad_(False)
    task = SimCLRTask(vit, projection_head(vit.config, simclr.projection_layers, simclr.projection_dim), simclr.temperature)
    stats = normalisation(image)

    def collator(split: str) -> TwoViewCollator:
        column = simclr.group_column
        partners = GroupPartners(splits[split], column, where=f"simclr.group_column ({split} images)") if column else None
        return TwoViewCollator(image.image_size, augmentation=simclr.views, seed=seed, partners=partners, **stats)

    positives = f"two images of one '{simclr.group_column}' group (MICLe)" if simclr.group_column else "two views of one image"
    frozen = ", patch projection frozen (MoCo v3)" if simclr.freeze_patch_projection else ""
    summary = (f"contrastive (SimCLR NT-Xent, temperature {simclr.temperature}, positives: {positives}, "
               f"{simclr.projection_layers}-layer projection to {simclr.projection_dim}{frozen})")
    return Objective(vit, task, collator("train"), collator("validation"), summary)


def check_jigsaw(image: ImageConfig, jigsaw: JigsawConfig) -> None:
    """The grid must fit the image and the permutation set the tiles; checked before any data is read."""
    try:
        check_grid(image.image_size, jigsaw.grid, jigsaw.tile_jitter)
        if jigsaw.num_permutations > math.factorial(jigsaw.grid**2):
            raise ConfigError(f"num_permutations {jigsaw.num_permutations} exceeds the {math.factorial(jigsaw.grid ** 2)} "
                              f"orderings of {jigsaw.grid ** 2} tiles")
    except ConfigError as err:
        raise ConfigError(f"jigsaw: {err}") from None


def jigsaw_objective(model: ModelConfig, image: ImageConfig, jigsaw: JigsawConfig, seed: int, augment: bool) -> Objective:
    """A ViT classifier over the permutation set, which its config's ``id2label`` carries ("2 0 1 3")."""
    check_jigsaw(image, jigsaw)
    permutations = permutation_set(jigsaw.grid**2, jigsaw.num_permutations, jigsaw.permutation_seed)
    id2label = permutation_labels(permutations)
    vit = build_model(
        model, "image_classification", **vit_fields(image), num_labels=len(id2label), id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    stats = normalisation(image)
    puzzle = dict(grid=jigsaw.grid, permutations=permutations, tile_jitter=jigsaw.tile_jitter, seed=seed, **stats)
    train = JigsawCollator(image.image_size, augment=augment, **puzzle)
    evaluation = JigsawCollator(image.image_size, **puzzle)
    summary = (f"jigsaw puzzle ({jigsaw.grid}x{jigsaw.grid} tiles, {jigsaw.num_permutations} permutations, "
               f"tile jitter {jigsaw.tile_jitter}px)")
    return Objective(vit, ImageClassificationTask(vit), train, evaluation, summary)
