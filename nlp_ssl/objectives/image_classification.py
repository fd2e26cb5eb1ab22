"""Supervised image classification batches, for fine-tuning and linear-probing a pretrained ViT."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from nlp_ssl.data.images import ImageTransform, image_fingerprint, images_of
from nlp_ssl.errors import DataError
from nlp_ssl.objectives.masking import batch_generator


class ImageClassificationCollator:
    """Turn ``[{"image": ..., "label": int}]`` into ``pixel_values`` (float B×C×H×W) and ``labels`` (int64).

    Augmentation (``augment=True`` or a custom ``transform``) draws from the batch's seeded generator.
    """

    def __init__(
        self,
        image_size: int,
        num_channels: int = 3,
        seed: int = 0,
        transform: ImageTransform | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: bool = False,
        label_column: str = "label",
    ):
        self.seed = seed
        self.label_column = label_column
        self.transform = transform or ImageTransform(image_size, num_channels, mean, std, train=augment)

    def _class_id(self, label) -> int:
        try:
            if isinstance(label, (bool, float)):
                raise TypeError
            return operator.index(label)
        except TypeError:
            raise DataError(
                f"ImageClassificationCollator: field {self.label_column!r} must be an integer class id, got {label!r}"
            ) from None

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        images = images_of(examples)
        raw_labels = images_of(examples, self.label_column)
        labels = torch.tensor([self._class_id(label) for label in raw_labels], dtype=torch.long)
        generator = batch_generator(self.seed, labels.numpy(), *(image_fingerprint(image) for image in images))
        pixel_values = torch.stack([self.transform(image, generator) for image in images])
        return {"pixel_values": pixel_values, "labels": labels}
