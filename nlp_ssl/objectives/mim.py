"""Masked image modelling as in SimMIM (Xie et al. 2022): hide random square blocks, regress their pixels.

Masking is drawn on a coarse grid of ``mask_patch_size`` blocks (SimMIM found large blocks make the
task harder and the features better), then upsampled to the model's ``model_patch_size`` grid, which
is what ``transformers.ViTForMaskedImageModeling`` takes as ``bool_masked_pos``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nlp_ssl.data.image_transforms import ImageTransform, example_generator, images_of
from nlp_ssl.errors import ConfigError


def check_mask_sizes(image_size: int, model_patch_size: int, mask_patch_size: int) -> None:
    """Raise a ValueError naming the sizes unless the mask grid tiles the image and the patch grid."""
    for name, value in (("image_size", image_size), ("model_patch_size", model_patch_size),
                        ("mask_patch_size", mask_patch_size)):
        if int(value) != value or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    if image_size % mask_patch_size:
        raise ConfigError(
            f"mask_patch_size {mask_patch_size} must divide image_size {image_size} "
            f"({image_size} / {mask_patch_size} = {image_size / mask_patch_size:g})"
        )
    if mask_patch_size % model_patch_size:
        raise ConfigError(
            f"model_patch_size {model_patch_size} must divide mask_patch_size {mask_patch_size} "
            "(each mask block has to cover whole model patches)"
        )


class MaskedImageCollator:
    """Turn ``[{"image": ...}]`` into ``pixel_values`` (B×C×H×W) and ``bool_masked_pos`` (B×patches, bool).

    Every image gets exactly ``round(mask_ratio * (image_size / mask_patch_size) ** 2)`` masked
    blocks (Python's ``round``), chosen uniformly without replacement. Augmentation and mask are drawn
    per example from ``(seed, epoch, image)`` (:func:`~nlp_ssl.data.image_transforms.example_generator`), so
    they do not depend on the batch, and change every epoch (:meth:`set_epoch`, which the trainer
    calls). ``bool_masked_pos`` is in the row-major order of the ViT's patch sequence.
    """

    def __init__(
        self,
        image_size: int,
        model_patch_size: int,
        mask_patch_size: int = 32,
        mask_ratio: float = 0.6,
        num_channels: int = 3,
        seed: int = 0,
        transform: ImageTransform | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: bool = False,
    ):
        check_mask_sizes(image_size, model_patch_size, mask_patch_size)
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.image_size = int(image_size)
        self.model_patch_size = int(model_patch_size)
        self.mask_patch_size = int(mask_patch_size)
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.epoch = 0
        self.mask_grid = self.image_size // self.mask_patch_size
        self.scale = self.mask_patch_size // self.model_patch_size
        self.num_masked = int(round(mask_ratio * self.mask_grid**2))
        if self.num_masked == 0:
            raise ConfigError(
                f"mask_ratio {mask_ratio} of {self.mask_grid ** 2} mask blocks rounds to 0 masked blocks; "
                "raise mask_ratio or use a smaller mask_patch_size"
            )
        self.transform = transform or ImageTransform(image_size, num_channels, mean, std, train=augment)

    @property
    def num_model_patches(self) -> int:
        return (self.image_size // self.model_patch_size) ** 2

    def set_epoch(self, epoch: int) -> None:
        """New masks (and crops) every epoch; the trainer calls this."""
        self.epoch = int(epoch)

    def sample_mask(self, generator: torch.Generator) -> torch.Tensor:
        """One block mask upsampled to the model's patch grid, flattened (num_model_patches, bool)."""
        blocks = self.mask_grid**2
        order = torch.rand(blocks, generator=generator).argsort()
        coarse = torch.zeros(blocks, dtype=torch.bool)
        coarse[order[: self.num_masked]] = True
        grid = coarse.view(self.mask_grid, self.mask_grid)
        return grid.repeat_interleave(self.scale, dim=0).repeat_interleave(self.scale, dim=1).reshape(-1)

    def view_and_mask(self, image, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(the transformed image C×S×S, its mask), both drawn from ``generator``."""
        x = self.transform(image, generator)
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ConfigError(
                f"MaskedImageCollator: the transform gave images of shape {tuple(x.shape)}, "
                f"expected {self.image_size}×{self.image_size}"
            )
        return x, self.sample_mask(generator)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        pairs = [self.view_and_mask(image, example_generator(self.seed, self.epoch, image)) for image in images_of(examples)]
        return {"pixel_values": torch.stack([x for x, _ in pairs]), "bool_masked_pos": torch.stack([m for _, m in pairs])}


class MaskedAuxViews:
    """SimMIM's part of a fine-tuning batch (:class:`~nlp_ssl.objectives.image_classification.PretextAuxCollator`):
    each copy as it is, with a mask drawn by ``masker`` (``aux_bool_masked_pos``)."""

    key = "aux_bool_masked_pos"

    def __init__(self, masker: MaskedImageCollator):
        self.masker = masker

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.masker.sample_mask(generator)

    def stack(self, targets: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(targets)
