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

from dataclasses import dataclass, field
from typing import NamedTuple

from nlp_ssl.config import check_ranges
from nlp_ssl.data.image_splits import LabeledImagesConfig
from nlp_ssl.errors import ConfigError
from nlp_ssl.hub import apply_timeout
from nlp_ssl.models import ModelConfig, build_model
from nlp_ssl.models.builders import resolve_model_path
from nlp_ssl.models.grayscale_vit import from_checkpoint
from nlp_ssl.objectives import registry
from nlp_ssl.objectives.entry import ImageSetup
from nlp_ssl.objectives.image_classification import ImageClassificationCollator, PretextAuxCollator
from nlp_ssl.tasks.vision import ImageClassificationTask, PretextAuxTask
from nlp_ssl.trainer import TrainConfig
from nlp_ssl.vision.image import ImageConfig, normalisation, vit_fields


@dataclass
class VisionAuxConfig:
    """The auxiliary pretext loss, named like the text side's ``finetune.aux_lm`` / ``aux_weight``."""

    #: An image objective that lends one (``rotation``: a RotNet head on rotated copies; ``mim``: SimMIM
    #: on masked copies, masked as its ``mim`` section says), ``none``, or ``auto``: the checkpoint's own
    #: pretext task where it lends one, else ``rotation``.
    aux_task: str = "none"
    #: λ in L = L_cls + λ·L_aux; 0 is plain fine-tuning.
    aux_weight: float = 0.5
    #: Unlabelled images (the training split without the validation images) per labelled image in the
    #: auxiliary batch; 0: only the labelled images' copies.
    aux_unlabelled: int = 0

    def __post_init__(self):
        check_ranges(self, aux_weight="[0, inf)", aux_unlabelled="[0, inf)")
        if self.aux_task not in registry.aux_choices("image"):
            raise ConfigError(f"aux_task {self.aux_task!r} is not one of {registry.aux_choices('image')}")


@dataclass
class _FinetuneVision(TrainConfig):
    MOVED_KEYS = {"finetune.mask_patch_size": "mim.mask_patch_size", "finetune.mask_ratio": "mim.mask_ratio"}
    data: LabeledImagesConfig = field(default_factory=LabeledImagesConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="vit"))
    finetune: VisionAuxConfig = field(default_factory=VisionAuxConfig)


#: + a settings section per image objective (``mim.mask_ratio`` masks SimMIM's auxiliary copies).
FinetuneVisionConfig = registry.with_objective_settings(_FinetuneVision, "image")


def checkpoint_config(path: str):
    """The checkpoint's HF config; a Hub name is asked about once within ``hub.timeout`` (the loader
    would retry a silent Hub for minutes), and what fails is one line."""
    from transformers import AutoConfig

    source = resolve_model_path(path)
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.name_or_path {path}: not a loadable HF model folder ({str(err).splitlines()[0][:200]})"
                          ) from None


def check_checkpoint_geometry(path: str, image: ImageConfig) -> None:
    """The checkpoint's ViT must see the images the data pipeline produces."""
    config = checkpoint_config(path)
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


def aux_objective(cfg: FinetuneVisionConfig):
    """The image objective whose auxiliary loss runs (None when λ = 0 or ``none``); ``auto`` follows
    the checkpoint (the objective that made it, where it lends one), else the first that lends one."""
    if cfg.finetune.aux_weight == 0:
        return None
    model = cfg.model
    source = None
    if model.name_or_path and model.load_weights and cfg.finetune.aux_task == "auto":
        source = checkpoint_config(model.name_or_path)
    return registry.auxiliary_objective(cfg.finetune.aux_task, "image", checkpoint=source, key="finetune.aux_task")


def image_setup(cfg: FinetuneVisionConfig) -> ImageSetup:
    return ImageSetup(cfg.model, cfg.image, cfg.seed, cfg.data.augment)


def check_aux(cfg: FinetuneVisionConfig) -> None:
    """The auxiliary objective's own checks (SimMIM's mask grid must tile the image), before any data is read."""
    apply_timeout(cfg.hub.timeout)  # the checkpoint's config may come from the Hub, before make_accelerator
    aux = aux_objective(cfg)
    if aux is not None and aux.check is not None:
        aux.check(registry.objective_settings(cfg, aux), image_setup(cfg))


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
    pool that ``finetune.aux_unlabelled`` draws from. The loss, its head and its batch keys are what
    the auxiliary objective's registry entry lends.
    """
    stats = normalisation(cfg.image)
    size = cfg.image.image_size
    train = ImageClassificationCollator(size, seed=cfg.seed, augment=cfg.data.augment, **stats)
    evaluation = ImageClassificationCollator(size, seed=cfg.seed, **stats)
    aux = aux_objective(cfg)
    if aux is None:
        return FinetuningParts(ImageClassificationTask(classifier), train, evaluation, evaluation, {"aux_task": "none"})
    check_aux(cfg)
    settings = registry.objective_settings(cfg, aux)
    loss, origin = aux.aux.loss(classifier, cfg.model)
    views = aux.aux.batch_keys(settings, setup=image_setup(cfg))
    per_image = cfg.finetune.aux_unlabelled
    pool = unlabelled if per_image else None
    task = PretextAuxTask(classifier, loss, cfg.finetune.aux_weight)
    record = {"aux_task": aux.name, "aux_weight": cfg.finetune.aux_weight, "aux_head": origin, "aux_unlabelled": per_image}
    return FinetuningParts(task, PretextAuxCollator(train, views, pool, per_image),
                           PretextAuxCollator(evaluation, views, pool, per_image), evaluation, record)
