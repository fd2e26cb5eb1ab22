"""Masked image modelling as in SimMIM (Xie et al. 2022): hide random square blocks, regress their pixels.

Masking is drawn on a coarse grid of ``mask_patch_size`` blocks (SimMIM found large blocks make the
task harder and the features better), then upsampled to the model's ``model_patch_size`` grid, which
is what ``transformers.ViTForMaskedImageModeling`` takes as ``bool_masked_pos``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nlp_ssl.data.images import ImageTransform, image_fingerprint, images_of
from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives.masking import batch_generator


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
    blocks (Python's ``round``), chosen uniformly without replacement from the batch's seeded
    generator. ``bool_masked_pos`` is in the row-major order of the ViT's patch sequence.
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

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size`` block masks upsampled to the model's patch grid, flattened (B × num_model_patches)."""
        blocks = self.mask_grid**2
        order = torch.rand(batch_size, blocks, generator=generator).argsort(dim=1)
        coarse = torch.zeros(batch_size, blocks, dtype=torch.bool)
        coarse.scatter_(1, order[:, : self.num_masked], True)
        grid = coarse.view(batch_size, self.mask_grid, self.mask_grid)
        fine = grid.repeat_interleave(self.scale, dim=1).repeat_interleave(self.scale, dim=2)
        return fine.reshape(batch_size, -1)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        images = images_of(examples)
        generator = batch_generator(self.seed, *(image_fingerprint(image) for image in images))
        pixel_values = torch.stack([self.transform(image, generator) for image in images])
        if pixel_values.shape[-2:] != (self.image_size, self.image_size):
            raise ConfigError(
                f"MaskedImageCollator: the transform gave images of shape {tuple(pixel_values.shape[1:])}, "
                f"expected {self.image_size}×{self.image_size}"
            )
        return {"pixel_values": pixel_values, "bool_masked_pos": self.sample_masks(len(images), generator)}
