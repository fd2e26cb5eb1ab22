"""A ViT classifier for few-label fine-tuning: fresh, or on a pretrained encoder that is proven transferred.

A rotation checkpoint has a 4-way head and a SimMIM one a decoder; both are dropped and a new
classification head is put on the encoder. Loading with ``ignore_mismatched_sizes`` would silently
re-initialise an encoder of the wrong size, which would make a pretraining comparison meaningless,
so every encoder tensor is compared with the checkpoint's.

``FinetuneVisionConfig`` lives here rather than in the recipe because the vision study reads it too:
its pixel baseline parses the same arguments to draw the same images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nlp_ssl.data.image_splits import LabeledImagesConfig
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig, build_model
from nlp_ssl.trainer import TrainConfig
from nlp_ssl.vision.image import ImageConfig, vit_fields


@dataclass
class FinetuneVisionConfig(TrainConfig):
    data: LabeledImagesConfig = field(default_factory=LabeledImagesConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="vit"))


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

    config = AutoConfig.from_pretrained(checkpoint)
    arch = (config.architectures or ["ViTModel"])[0]
    source = getattr(transformers, arch).from_pretrained(checkpoint)
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
    classifier = build_model(model, "image_classification", ignore_mismatched_sizes=True, **labels)
    return classifier, encoder_transfer(classifier, model.name_or_path) if model.load_weights else None
