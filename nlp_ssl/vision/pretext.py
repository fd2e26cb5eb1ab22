"""The pretext tasks for a ViT, as the objective registry builds them: each its settings, its parts
(HF model, loss, training and evaluation collators), its checks, and the auxiliary loss it lends
few-label fine-tuning.

RotNet (predict which of four rotations an image was given), SimMIM (reconstruct hidden patches,
L1), SimCLR (pull two views of an image together, with MICLe's positives from one group) and the
jigsaw puzzle (predict which permutation shuffled the tiles) differ only in these parts; the
trainer, data and processor are shared. Their entries are in :mod:`nlp_ssl.objectives.registry`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import ViTForImageClassification, ViTForMaskedImageModeling

from nlp_ssl.config import check_ranges
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig, build_model
from nlp_ssl.models.grayscale_vit import from_checkpoint
from nlp_ssl.objectives import MaskedImageCollator, RotationCollator
from nlp_ssl.objectives.entry import Parts
from nlp_ssl.objectives.jigsaw import JigsawCollator, check_grid, permutation_labels, permutation_set
from nlp_ssl.objectives.mim import MaskedAuxViews, check_mask_sizes
from nlp_ssl.objectives.simclr import GroupPartners, TwoViewCollator, ViewAugmentation
from nlp_ssl.tasks.vision import (
    ImageClassificationTask,
    MaskedImageAux,
    MaskedImageHead,
    MaskedImageModelingTask,
    RotationAux,
    RotationHead,
    SimCLRTask,
    projection_head,
)
from nlp_ssl.vision.image import normalisation, vit_fields

#: Rotation class k = k quarter turns counter-clockwise (see nlp_ssl.objectives.rotation).
ROTATION_LABELS = {0: "0", 1: "90", 2: "180", 3: "270"}


@dataclass
class RotationConfig:
    """RotNet: each image turned by a multiple of 90 degrees, the model names the turn."""

    #: ``all``: each image at the four rotations (RotNet); ``one``: one random rotation per image.
    mode: Literal["all", "one"] = "all"


@dataclass
class MIMConfig:
    """SimMIM: the masked share of patches and the size of a masked square."""

    #: Side of the square blocks that are hidden; a multiple of image.patch_size dividing image.image_size.
    mask_patch_size: int = 4
    mask_ratio: float = 0.5

    def __post_init__(self):
        check_ranges(self, mask_patch_size="(0, inf)", mask_ratio="(0, 1)")


@dataclass
class SimCLRConfig:
    """SimCLR: two augmented views of an image (or MICLe's two images of one case) pulled together."""

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
    """The jigsaw puzzle: the grid, how many permutations, and the jitter of each tile."""

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


def _vit(setup, head: str, **fields):
    return build_model(setup.model, head, **vit_fields(setup.image), **fields)


def _stats(setup) -> dict:
    return normalisation(setup.image)


# ---------------------------------------------------------------------------- RotNet


def rotation_parts(rotation: RotationConfig, setup) -> Parts:
    """A 4-way ViT classifier; validation always sees all four rotations of each image."""
    vit = _vit(setup, "image_classification", num_labels=len(ROTATION_LABELS), id2label=dict(ROTATION_LABELS),
               label2id={v: k for k, v in ROTATION_LABELS.items()})
    size, stats = setup.image.image_size, _stats(setup)
    train = RotationCollator(size, mode=rotation.mode, seed=setup.seed, augment=setup.augment, **stats)
    evaluation = RotationCollator(size, mode="all", seed=setup.seed, **stats)
    return Parts(vit, ImageClassificationTask(vit), train, evaluation, pipeline_tag="image-classification",
                 summary=f"rotation prediction (RotNet, 4 rotations, mode {rotation.mode})")


def made_by_rotation(config) -> bool:
    """A RotNet checkpoint: a ViT classifier over the four rotations."""
    labels = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    return _architecture(config) == "ViTForImageClassification" and labels == ROTATION_LABELS


def rotation_aux(classifier, model: ModelConfig) -> tuple[RotationAux, str]:
    """(the RotNet loss beside ``classifier``, where its head came from): a RotNet checkpoint's own
    4-way classifier, else a new one."""
    config = classifier.config
    source = _source_config(model)
    if source is not None and made_by_rotation(source):
        pretrained = from_checkpoint(ViTForImageClassification, model.name_or_path, source).classifier
        return RotationAux(RotationHead(pretrained), config.patch_size), "checkpoint"
    head = torch.nn.Linear(config.hidden_size, 4)
    _init_like_vit(head, config)
    return RotationAux(RotationHead(head), config.patch_size), "new"


# ---------------------------------------------------------------------------- SimMIM


def check_mim(mim: MIMConfig, setup) -> None:
    """The mask grid must tile the image and the patch grid; checked before any data is read."""
    try:
        check_mask_sizes(setup.image.image_size, setup.image.patch_size, mim.mask_patch_size)
    except ValueError as err:
        raise ConfigError(f"mim: {err}") from None


def _masker(mim: MIMConfig, setup, **kwargs) -> MaskedImageCollator:
    image = setup.image
    try:
        return MaskedImageCollator(image.image_size, image.patch_size, mim.mask_patch_size, mim.mask_ratio, **kwargs)
    except ValueError as err:
        raise ConfigError(f"mim: {err}") from None


def mim_parts(mim: MIMConfig, setup) -> Parts:
    """A ViT with SimMIM's one-layer decoder; validation masks are seeded like training's."""
    check_mim(mim, setup)
    stats = _stats(setup)
    train = _masker(mim, setup, seed=setup.seed, augment=setup.augment, **stats)
    evaluation = _masker(mim, setup, seed=setup.seed, **stats)
    # encoder_stride = patch size: SimMIM's one-layer decoder maps each token back to its own patch.
    vit = _vit(setup, "masked_image_modeling", encoder_stride=setup.image.patch_size)
    summary = f"masked image modelling (SimMIM, {mim.mask_ratio:.0%} of {mim.mask_patch_size}px blocks masked, L1)"
    return Parts(vit, MaskedImageModelingTask(vit), train, evaluation, summary=summary)


def made_by_mim(config) -> bool:
    return _architecture(config) == "ViTForMaskedImageModeling"


def mim_aux(classifier, model: ModelConfig) -> tuple[MaskedImageAux, str]:
    """(the SimMIM loss beside ``classifier``, where its head came from): a SimMIM checkpoint's own mask
    token and decoder, else new ones."""
    config = classifier.config
    source = _source_config(model)
    if source is not None and made_by_mim(source):
        simmim = ViTForMaskedImageModeling.from_pretrained(model.name_or_path)
        head = MaskedImageHead(simmim.vit.embeddings.mask_token, simmim.decoder)
        return MaskedImageAux(head, config.patch_size), "checkpoint"
    decoder = torch.nn.Sequential(
        torch.nn.Conv2d(config.hidden_size, config.patch_size**2 * config.num_channels, kernel_size=1),
        torch.nn.PixelShuffle(config.patch_size),
    )
    _init_like_vit(decoder[0], config)
    head = MaskedImageHead(torch.nn.Parameter(torch.zeros(1, 1, config.hidden_size)), decoder)
    return MaskedImageAux(head, config.patch_size), "new"


def mim_aux_views(mim: MIMConfig, setup) -> MaskedAuxViews:
    return MaskedAuxViews(_masker(mim, setup, num_channels=setup.image.num_channels))


# ---------------------------------------------------------------------------- SimCLR


def simclr_columns(simclr: SimCLRConfig) -> list[str]:
    """Columns SimCLR reads besides the image: MICLe's group column."""
    return [simclr.group_column] if simclr.group_column else []


def vit_with_pooler(setup, pooler_width: int | None):
    """A ``ViTModel`` whose pooler (dense + GELU on [CLS]) is the projection head's first layer; the
    encoder is built (or loaded) as for the other pretext tasks, the pooler is new."""
    from transformers import ViTModel

    classifier = _vit(setup, "image_classification", pooler_act="gelu")
    config = classifier.config
    config.pooler_output_size = pooler_width or config.hidden_size
    vit = ViTModel(config)
    missing, unexpected = vit.load_state_dict(classifier.vit.state_dict(), strict=False)
    if unexpected or any(not name.startswith("pooler.") for name in missing):
        raise ConfigError(f"model: the ViT encoder did not fit a ViTModel (missing {missing}, unexpected {unexpected})")
    return vit


def simclr_parts(simclr: SimCLRConfig, setup) -> Parts:
    """SimCLR on a ViT; with ``group_column``, MICLe pairs within each split of ``setup.splits``.
    Validation views are drawn like training's (seeded, epoch 0), so ``eval_loss`` and
    ``eval_retrieval_accuracy`` compare across steps; their negatives are the validation batch."""
    vit = vit_with_pooler(setup, simclr.projection_hidden)
    if simclr.freeze_patch_projection:
        vit.embeddings.patch_embeddings.projection.requires_grad_(False)
    task = SimCLRTask(vit, projection_head(vit.config, simclr.projection_layers, simclr.projection_dim), simclr.temperature)
    stats = _stats(setup)

    def collator(split: str) -> TwoViewCollator:
        column = simclr.group_column
        where = f"simclr.group_column ({split} images)"
        partners = GroupPartners(setup.splits[split], column, where=where) if column else None
        return TwoViewCollator(setup.image.image_size, augmentation=simclr.views, seed=setup.seed, partners=partners,
                               **stats)

    positives = f"two images of one '{simclr.group_column}' group (MICLe)" if simclr.group_column else "two views of one image"
    frozen = ", patch projection frozen (MoCo v3)" if simclr.freeze_patch_projection else ""
    summary = (f"contrastive (SimCLR NT-Xent, temperature {simclr.temperature}, positives: {positives}, "
               f"{simclr.projection_layers}-layer projection to {simclr.projection_dim}{frozen})")
    return Parts(vit, task, collator("train"), collator("validation"), summary=summary)


def made_by_simclr(config) -> bool:
    return _architecture(config) == "ViTModel" and getattr(config, "pooler_act", None) == "gelu"


# ---------------------------------------------------------------------------- jigsaw


def check_jigsaw(jigsaw: JigsawConfig, setup) -> None:
    """The grid must fit the image and the permutation set the tiles; checked before any data is read."""
    try:
        check_grid(setup.image.image_size, jigsaw.grid, jigsaw.tile_jitter)
        if jigsaw.num_permutations > math.factorial(jigsaw.grid**2):
            raise ConfigError(f"num_permutations {jigsaw.num_permutations} exceeds the {math.factorial(jigsaw.grid ** 2)} "
                              f"orderings of {jigsaw.grid ** 2} tiles")
    except ConfigError as err:
        raise ConfigError(f"jigsaw: {err}") from None


def jigsaw_parts(jigsaw: JigsawConfig, setup) -> Parts:
    """A ViT classifier over the permutation set, which its config's ``id2label`` carries ("2 0 1 3")."""
    check_jigsaw(jigsaw, setup)
    permutations = permutation_set(jigsaw.grid**2, jigsaw.num_permutations, jigsaw.permutation_seed)
    id2label = permutation_labels(permutations)
    vit = _vit(setup, "image_classification", num_labels=len(id2label), id2label=id2label,
               label2id={v: k for k, v in id2label.items()})
    puzzle = dict(grid=jigsaw.grid, permutations=permutations, tile_jitter=jigsaw.tile_jitter, seed=setup.seed,
                  **_stats(setup))
    train = JigsawCollator(setup.image.image_size, augment=setup.augment, **puzzle)
    evaluation = JigsawCollator(setup.image.image_size, **puzzle)
    summary = (f"jigsaw puzzle ({jigsaw.grid}x{jigsaw.grid} tiles, {jigsaw.num_permutations} permutations, "
               f"tile jitter {jigsaw.tile_jitter}px)")
    return Parts(vit, ImageClassificationTask(vit), train, evaluation, summary=summary, pipeline_tag="image-classification")


def made_by_jigsaw(config) -> bool:
    """A jigsaw checkpoint: a ViT classifier whose labels are permutations ("2 0 1 3")."""
    labels = list((getattr(config, "id2label", None) or {}).values())
    return (_architecture(config) == "ViTForImageClassification" and len(labels) > 1
            and all(sorted(label.split()) == sorted(map(str, range(len(label.split())))) for label in labels))


# ---------------------------------------------------------------------------- shared


def _architecture(config) -> str | None:
    return (getattr(config, "architectures", None) or [None])[0]


def _source_config(model: ModelConfig):
    """The checkpoint's HF config, or None when the model starts from scratch."""
    if not (model.name_or_path and model.load_weights):
        return None
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model.name_or_path)


def _init_like_vit(module, config) -> None:
    """ViT's own initialisation of a new linear or conv layer: truncated normal weights, zero bias."""
    torch.nn.init.trunc_normal_(module.weight, std=config.initializer_range)
    torch.nn.init.zeros_(module.bias)
