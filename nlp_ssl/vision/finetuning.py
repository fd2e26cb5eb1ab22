"""A ViT classifier for few-label fine-tuning: fresh, or on a pretrained encoder that is proven transferred.

A rotation checkpoint has a 4-way head and a SimMIM one a decoder; both are dropped and a new
classification head is put on the encoder. Loading with ``ignore_mismatched_sizes`` would silently
re-initialise an encoder of the wrong size, which would make a pretraining comparison meaningless,
so every encoder tensor is compared with the checkpoint's.

``FinetuneVisionConfig`` lives here rather than in the recipe because the vision study reads it too:
its baselines parse the same arguments to draw the same images.

The auxiliary pretext loss (``finetune.aux_task``, ``finetune.aux_weight``; GPT-1's auxiliary LM
loss for images) puts a rotation head or SimMIM's decoder beside the classifier
(:class:`~nlp_ssl.tasks.vision.PretextAuxTask`). Like the text side's LM head, the head is the
checkpoint's own when it has one (a RotNet classifier, a SimMIM decoder and mask token), else new.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from nlp_ssl.config import check_ranges
from nlp_ssl.data.image_splits import LabeledImagesConfig
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig, build_model
from nlp_ssl.models.grayscale_vit import from_checkpoint
from nlp_ssl.objectives.image_classification import ImageClassificationCollator, PretextAuxCollator
from nlp_ssl.objectives.mim import MaskedImageCollator, check_mask_sizes
from nlp_ssl.tasks.vision import ImageClassificationTask, MaskedImageHead, PretextAuxTask, RotationHead
from nlp_ssl.trainer import TrainConfig
from nlp_ssl.vision.image import ImageConfig, normalisation, vit_fields


@dataclass
class VisionAuxConfig:
    """The auxiliary pretext loss, named like the text side's ``finetune.aux_lm`` / ``aux_weight``."""

    #: ``rotation`` (RotNet head on rotated copies), ``mim`` (SimMIM on masked copies), ``none``, or
    #: ``auto``: the checkpoint's own pretext task (``mim`` for a SimMIM checkpoint, else ``rotation``).
    aux_task: Literal["none", "rotation", "mim", "auto"] = "none"
    #: λ in L = L_cls + λ·L_aux; 0 is plain fine-tuning.
    aux_weight: float = 0.5
    #: Unlabelled images (the training split without the validation images) per labelled image in the
    #: auxiliary batch; 0: only the labelled images' copies.
    aux_unlabelled: int = 0
    #: SimMIM masking of the auxiliary copies (as ``pretrain_vit.py``'s ``mim`` section).
    mask_patch_size: int = 4
    mask_ratio: float = 0.5

    def __post_init__(self):
        check_ranges(self, aux_weight="[0, inf)", aux_unlabelled="[0, inf)", mask_patch_size="(0, inf)",
                     mask_ratio="(0, 1)")


@dataclass
class FinetuneVisionConfig(TrainConfig):
    data: LabeledImagesConfig = field(default_factory=LabeledImagesConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="vit"))
    finetune: VisionAuxConfig = field(default_factory=VisionAuxConfig)


def check_checkpoint_geometry(path: str, image: ImageConfig) -> None:
    """The checkpoint's ViT must see the images the data pipeline produces."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.name_or_path {path}: not a loadable HF model folder ({err})") from None
    if config.model_type != "vit":
        raise ConfigError(f"model.name_or_path {path}: a {config.model_type!r} model, expected a ViT")
    for name, want in vit_fields(image).items():
        if name == "num_channels" and (want, config.num_channels) == (1, 3):
            continue  # a grayscale run's model, saved for RGB input: checked as it loads
        if getattr(config, name) != want:
            raise ConfigError(
                f"model.name_or_path {path} has {name}={getattr(config, name)} but image.{name}={want}; "
                f"set image.{name}={getattr(config, name)}"
            )


def encoder_transfer(model, checkpoint: str) -> dict:
    """Check that every ViT encoder tensor of ``model`` equals the checkpoint's; list what is new.

    The checkpoint is reloaded in its own architecture (rotation classifier or SimMIM model) and the
    two ``vit`` encoders are compared tensor by tensor. Raises when any differs.
    """
    import torch
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint, num_channels=model.config.num_channels)
    arch = (config.architectures or ["ViTModel"])[0]
    source = from_checkpoint(getattr(transformers, arch), checkpoint, config)  # as trained, when saved for RGB input
    source_encoder = source.vit.state_dict() if hasattr(source, "vit") else source.state_dict()
    transferred, differ = [], []
    for name, tensor in model.vit.state_dict().items():
        other = source_encoder.get(name)
        same = other is not None and other.shape == tensor.shape and torch.equal(other, tensor)
        (transferred if same else differ).append(f"vit.{name}")
    if differ or not transferred:
        raise ConfigError(
            f"model.name_or_path {checkpoint}: {len(differ)} encoder tensor(s) were not loaded from it "
            f"(e.g. {differ[0] if differ else 'all'}); is it a ViT of the same size?"
        )
    new = [name for name, _ in model.named_parameters() if not name.startswith("vit.")]
    return {"transferred_tensors": len(transferred), "new_tensors": new, "checkpoint_architecture": arch}


def build_classifier(model: ModelConfig, image: ImageConfig, names: list[str]):
    """(ViTForImageClassification for ``names``, what was transferred or None when trained from scratch)."""
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    if not model.name_or_path:
        return build_model(model, "image_classification", **vit_fields(image), num_labels=len(names), **labels), None
    check_checkpoint_geometry(model.name_or_path, image)
    # A rotation checkpoint has a 4-way head: its shape no longer fits, so it is re-initialised.
    classifier = build_model(model, "image_classification", ignore_mismatched_sizes=True,
                             num_channels=image.num_channels, **labels)
    return classifier, encoder_transfer(classifier, model.name_or_path) if model.load_weights else None


def _checkpoint_config(model: ModelConfig):
    """The checkpoint's HF config, or None when the model starts from scratch."""
    if not (model.name_or_path and model.load_weights):
        return None
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model.name_or_path)


def checkpoint_architecture(model: ModelConfig) -> str | None:
    """The HF class a checkpoint was saved as (``ViTForMaskedImageModeling`` ...); None from scratch."""
    config = _checkpoint_config(model)
    return (config.architectures or [None])[0] if config is not None else None


def resolve_aux_task(aux: VisionAuxConfig, model: ModelConfig) -> str:
    """The auxiliary task that runs: ``none`` when λ = 0; ``auto`` follows the checkpoint."""
    if aux.aux_weight == 0 or aux.aux_task == "none":
        return "none"
    if aux.aux_task != "auto":
        return aux.aux_task
    return "mim" if checkpoint_architecture(model) == "ViTForMaskedImageModeling" else "rotation"


def _init_like_vit(module, config) -> None:
    """ViT's own initialisation of a new linear or conv layer: truncated normal weights, zero bias."""
    import torch

    torch.nn.init.trunc_normal_(module.weight, std=config.initializer_range)
    torch.nn.init.zeros_(module.bias)


def pretext_head(classifier, model: ModelConfig, aux: str):
    """(the auxiliary head, where it came from): the checkpoint's own head when it was pretrained for
    ``aux`` (RotNet's 4-way classifier; SimMIM's mask token and decoder), else a new one."""
    import torch
    from transformers import ViTForImageClassification, ViTForMaskedImageModeling

    config = classifier.config
    source = _checkpoint_config(model)
    arch = (source.architectures or [None])[0] if source is not None else None
    if aux == "rotation":
        if arch == "ViTForImageClassification" and source.num_labels == 4:
            return RotationHead(ViTForImageClassification.from_pretrained(model.name_or_path).classifier), "checkpoint"
        head = torch.nn.Linear(config.hidden_size, 4)
        _init_like_vit(head, config)
        return RotationHead(head), "new"
    if arch == "ViTForMaskedImageModeling":
        simmim = ViTForMaskedImageModeling.from_pretrained(model.name_or_path)
        return MaskedImageHead(simmim.vit.embeddings.mask_token, simmim.decoder), "checkpoint"
    mim_config = copy.deepcopy(config)
    mim_config.encoder_stride = config.patch_size
    decoder = torch.nn.Sequential(
        torch.nn.Conv2d(config.hidden_size, config.patch_size**2 * config.num_channels, kernel_size=1),
        torch.nn.PixelShuffle(config.patch_size),
    )
    _init_like_vit(decoder[0], mim_config)
    return MaskedImageHead(torch.nn.Parameter(torch.zeros(1, 1, config.hidden_size)), decoder), "new"


def check_aux(cfg: FinetuneVisionConfig) -> None:
    """SimMIM's mask grid must tile the image and the patch grid; checked before any data is read."""
    if cfg.finetune.aux_task in ("mim", "auto") and cfg.finetune.aux_weight > 0:
        try:
            check_mask_sizes(cfg.image.image_size, cfg.image.patch_size, cfg.finetune.mask_patch_size)
        except ValueError as err:
            raise ConfigError(f"finetune: {err}") from None


class FinetuningParts(NamedTuple):
    task: object
    collator: object
    eval_collator: object
    #: Plain classification batches (no auxiliary keys) for scoring the test images.
    test_collator: object
    #: What all_results.json records about the auxiliary loss.
    record: dict


def finetuning_parts(cfg: FinetuneVisionConfig, classifier, unlabelled=None) -> FinetuningParts:
    """The task and collators of few-label fine-tuning, with the auxiliary loss when one is asked for.

    With one, the training and validation collators add the auxiliary batch (validation without
    augmentation, so ``eval_rot_loss``/``eval_mim_loss`` compare across steps); ``unlabelled`` is the
    pool that ``finetune.aux_unlabelled`` draws from.
    """
    stats = normalisation(cfg.image)
    size = cfg.image.image_size
    train = ImageClassificationCollator(size, seed=cfg.seed, augment=cfg.data.augment, **stats)
    evaluation = ImageClassificationCollator(size, seed=cfg.seed, **stats)
    aux = resolve_aux_task(cfg.finetune, cfg.model)
    if aux == "none":
        return FinetuningParts(ImageClassificationTask(classifier), train, evaluation, evaluation, {"aux_task": "none"})
    masker = None
    if aux == "mim":
        check_aux(cfg)
        masker = MaskedImageCollator(size, cfg.image.patch_size, cfg.finetune.mask_patch_size, cfg.finetune.mask_ratio,
                                     num_channels=cfg.image.num_channels)
    head, origin = pretext_head(classifier, cfg.model, aux)
    per_image = cfg.finetune.aux_unlabelled
    pool = unlabelled if per_image else None
    task = PretextAuxTask(classifier, aux, cfg.finetune.aux_weight, head)
    record = {"aux_task": aux, "aux_weight": cfg.finetune.aux_weight, "aux_head": origin, "aux_unlabelled": per_image}
    return FinetuningParts(task, PretextAuxCollator(train, aux, masker, pool, per_image),
                           PretextAuxCollator(evaluation, aux, masker, pool, per_image), evaluation, record)
