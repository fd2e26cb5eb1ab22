"""The image settings a ViT is built for, and the processor that makes inference see what training saw."""

from __future__ import annotations

from dataclasses import dataclass, field

from nlp_ssl.config import check_ranges
from nlp_ssl.data.images import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from nlp_ssl.errors import ConfigError


@dataclass
class ImageConfig:
    """What the ViT sees; saved as the checkpoint's ViTImageProcessor so inference matches training."""

    image_size: int = 28
    patch_size: int = 4
    #: 1 for grayscale, 3 for RGB. Either way the saved model takes RGB images, as pipelines give
    #: them: a grayscale model is saved reading their luma (``nlp_ssl.models.grayscale_vit``).
    num_channels: int = 1
    mean: list[float] = field(default_factory=lambda: list(FASHION_MNIST_MEAN))
    std: list[float] = field(default_factory=lambda: list(FASHION_MNIST_STD))

    def __post_init__(self):
        check_ranges(self, image_size="(0, inf)", patch_size="(0, inf)")


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
    """One value per channel (a single value is shared by all)."""
    return list(values) * num_channels if len(values) == 1 else list(values)


def normalisation(image: ImageConfig) -> dict:
    """The keyword arguments every image collator takes to normalise like the processor."""
    return {"num_channels": image.num_channels, "mean": image.mean, "std": image.std}


def vit_fields(image: ImageConfig) -> dict:
    """The HF ViT config fields that the image settings decide."""
    return {"image_size": image.image_size, "patch_size": image.patch_size, "num_channels": image.num_channels}


def make_processor(image: ImageConfig):
    """The processor saved beside the model: RGB (what pipelines give, and what every saved ViT takes;
    a one-channel array is repeated), resized, scaled to [0, 1] and normalised as in training."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        do_convert_rgb=True,
        do_resize=True,
        size={"height": image.image_size, "width": image.image_size},
        do_rescale=True,
        do_normalize=True,
        image_mean=channel_stats(image.mean, 3),
        image_std=channel_stats(image.std, 3),
    )
