"""Supervised image classification batches, for fine-tuning and linear-probing a pretrained ViT, optionally
with the batch of an auxiliary pretext task (rotation, SimMIM ...) beside them."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from nlp_ssl.data.image_transforms import ImageTransform, example_generator, images_of
from nlp_ssl.errors import ConfigError, DataError

#: Independent per-example draws: the classification view, the auxiliary task's rotation or mask of
#: that view, and the pool images the example brings to the auxiliary batch.
STREAM_VIEW, STREAM_AUX, STREAM_POOL = 0, 1, 2


class ImageClassificationCollator:
    """Turn ``[{"image": ..., "label": int}]`` into ``pixel_values`` (float B×C×H×W) and ``labels`` (int64).

    Augmentation (``augment=True`` or a custom ``transform``) is drawn per example from
    ``(seed, epoch, image)``, so it does not depend on the batch and changes every epoch
    (:meth:`set_epoch`, which the trainer calls).
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
        self.epoch = 0
        self.label_column = label_column
        self.transform = transform or ImageTransform(image_size, num_channels, mean, std, train=augment)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _class_id(self, label) -> int:
        try:
            if isinstance(label, (bool, float)):
                raise TypeError
            return operator.index(label)
        except TypeError:
            raise DataError(
                f"ImageClassificationCollator: field {self.label_column!r} must be an integer class id, got {label!r}"
            ) from None

    def view(self, image, stream: int = STREAM_VIEW) -> torch.Tensor:
        """The (augmented) tensor of ``image`` for this seed and epoch."""
        return self.transform(image, example_generator(self.seed, self.epoch, image, stream))

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        images = images_of(examples)
        raw_labels = images_of(examples, self.label_column)
        labels = torch.tensor([self._class_id(label) for label in raw_labels], dtype=torch.long)
        pixel_values = torch.stack([self.view(image) for image in images])
        return {"pixel_values": pixel_values, "labels": labels}


class PretextAuxCollator:
    """A classification batch plus the auxiliary pretext batch of :class:`~nlp_ssl.tasks.vision.PretextAuxTask`.

    ``aux_pixel_values`` holds, for each labelled example in order, its classification view (the very
    tensor in ``pixel_values``) followed by ``pool_per_image`` images drawn from the unlabelled
    ``pool``, each augmented like the labelled ones. ``views`` (what the pretext objective lends:
    :class:`~nlp_ssl.objectives.rotation.RotationAuxViews`, :class:`~nlp_ssl.objectives.mim.MaskedAuxViews`)
    turns each of them into its pretext input and target (``aux_labels``, ``aux_bool_masked_pos`` ...).
    Every draw (view, pretext target, which pool images) is per labelled example and per epoch, so
    the keys of the plain classification batch are exactly :class:`ImageClassificationCollator`'s.
    """

    def __init__(self, classification: ImageClassificationCollator, views, pool=None, pool_per_image: int = 0):
        if pool_per_image < 0 or (pool_per_image and (pool is None or len(pool) == 0)):
            raise ConfigError(f"pool_per_image={pool_per_image} needs a non-empty unlabelled pool")
        self.classification = classification
        self.views = views
        self.pool = pool
        self.pool_per_image = int(pool_per_image)

    @property
    def epoch(self) -> int:
        return self.classification.epoch

    def set_epoch(self, epoch: int) -> None:
        self.classification.set_epoch(epoch)

    def _pool_views(self, image) -> list[torch.Tensor]:
        if not self.pool_per_image:
            return []
        cls = self.classification
        generator = example_generator(cls.seed, cls.epoch, image, STREAM_POOL)
        rows = torch.randint(len(self.pool), (self.pool_per_image,), generator=generator).tolist()
        return [cls.transform(self.pool[row]["image"], generator) for row in rows]

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = self.classification(examples)
        cls = self.classification
        inputs, targets = [], []
        for image, view in zip(images_of(examples), batch["pixel_values"]):
            generator = example_generator(cls.seed, cls.epoch, image, STREAM_AUX)
            for x in [view, *self._pool_views(image)]:
                x, target = self.views(x, generator)
                inputs.append(x)
                targets.append(target)
        batch["aux_pixel_values"] = torch.stack(inputs)
        batch[self.views.key] = self.views.stack(targets)
        return batch
