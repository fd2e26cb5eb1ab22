"""Rotation prediction (RotNet, Gidaris et al. 2018): classify which of 0/90/180/270 degrees an image was turned.

Label ``k`` means the image was rotated by ``k`` quarter turns counter-clockwise, as
``torch.rot90(x, k, dims=(-2, -1))`` does, so ``torch.rot90(pixel_values[i], -labels[i], dims=(-2, -1))``
undoes it. Pretrain a ``ViTForImageClassification`` with ``num_labels=4`` on these batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nlp_ssl.data.image_transforms import ImageTransform, example_generator, images_of
from nlp_ssl.errors import ConfigError, DataError

NUM_ROTATIONS = 4


def quarter_turns(generator: torch.Generator) -> int:
    """A rotation class drawn uniformly from 0..3 (quarter turns counter-clockwise)."""
    return int(torch.randint(NUM_ROTATIONS, (1,), generator=generator))


def rotate(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` (…×H×W) turned ``k`` quarter turns counter-clockwise: rotation class ``k``."""
    return torch.rot90(x, k, dims=(-2, -1))


def check_square(x: torch.Tensor, who: str) -> torch.Tensor:
    if x.ndim != 3 or x.shape[-1] != x.shape[-2]:
        raise DataError(
            f"{who}: the transform gave an image of shape {tuple(x.shape)}; rotation "
            "needs square C×H×W images (resize to image_size×image_size first)"
        )
    return x


class RotationCollator:
    """Turn ``[{"image": PIL image or tensor, ...}]`` into ``pixel_values`` (float B×C×H×W) and ``labels``.

    ``mode="all"`` emits every image at all four rotations (4 rows per image, labels 0, 1, 2, 3 in
    that order), the RotNet default; ``mode="one"`` emits each image once at a random rotation. Images
    are first made square by ``transform`` (default: an :class:`ImageTransform` that resizes to
    ``image_size×image_size``, stretching non-square images), because a quarter turn of a non-square
    image would change its shape and give the label away. Other fields of the examples (an original
    class label, say) are ignored. Augmentation and the rotation are drawn per example from
    ``(seed, epoch, image)`` (:func:`~nlp_ssl.data.image_transforms.example_generator`); the trainer calls
    :meth:`set_epoch`.
    """

    def __init__(
        self,
        image_size: int,
        num_channels: int = 3,
        mode: str = "all",
        seed: int = 0,
        transform: ImageTransform | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: bool = False,
    ):
        if mode not in ("all", "one"):
            raise ConfigError(f"RotationCollator mode must be 'all' or 'one', got {mode!r}")
        self.image_size = int(image_size)
        self.num_channels = num_channels
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.transform = transform or ImageTransform(image_size, num_channels, mean, std, train=augment)

    def set_epoch(self, epoch: int) -> None:
        """New crops and rotations every epoch; the trainer calls this."""
        self.epoch = int(epoch)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        squares, turns = [], []
        for image in images_of(examples):
            generator = example_generator(self.seed, self.epoch, image)
            squares.append(check_square(self.transform(image, generator), "RotationCollator"))
            turns.append(quarter_turns(generator) if self.mode == "one" else 0)
        batch = torch.stack(squares)
        if self.mode == "all":
            rotated = torch.stack([rotate(batch, k) for k in range(NUM_ROTATIONS)], dim=1)
            labels = torch.arange(NUM_ROTATIONS).repeat(len(squares))
            return {"pixel_values": rotated.flatten(0, 1).contiguous(), "labels": labels}
        labels = torch.tensor(turns, dtype=torch.long)
        rotated = torch.stack([rotate(x, k) for x, k in zip(batch, turns)])
        return {"pixel_values": rotated, "labels": labels}


class RotationAuxViews:
    """RotNet's part of a fine-tuning batch (:class:`~nlp_ssl.objectives.image_classification.PretextAuxCollator`):
    each copy turned by a random number of quarter turns, labelled with it (``aux_labels``)."""

    key = "aux_labels"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        k = quarter_turns(generator)
        return rotate(x, k), k

    def stack(self, targets: list[int]) -> torch.Tensor:
        return torch.tensor(targets, dtype=torch.long)
