"""Supervised image classification batches, for fine-tuning and linear-probing a pretrained ViT, optionally
with the batch of an auxiliary pretext task (rotation or SimMIM) beside them."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from nlp_ssl.data.images import ImageTransform, example_generator, images_of
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.objectives.mim import MaskedImageCollator
from nlp_ssl.objectives.rotation import quarter_turns, rotate

#: Independent per-example draws: the classification view, the auxiliary task's rotation or mask of
#: that view, and the pool images the example brings to the auxiliary batch.
STREAM_VIEW, STREAM_AUX, STREAM_POOL = 0, 1, 2
AUX_TASKS = ("none", "rotation", "mim")


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
    ``pool``, each augmented like the labelled ones. ``aux="rotation"`` turns every row by a random
    quarter turn (``aux_labels``, as :class:`~nlp_ssl.objectives.rotation.RotationCollator` labels
    them); ``aux="mim"`` gives every row a SimMIM mask (``aux_bool_masked_pos``) from ``masker``.
    Every draw (view, rotation, mask, which pool images) is per labelled example and per epoch, so
    the keys of the plain classification batch are exactly :class:`ImageClassificationCollator`'s.
    """

    def __init__(self, classification: ImageClassificationCollator, aux: str, masker: MaskedImageCollator | None = None,
                 pool=None, pool_per_image: int = 0):
        if aux not in ("rotation", "mim"):
            raise ConfigError(f"PretextAuxCollator aux must be 'rotation' or 'mim', got {aux!r}")
        if aux == "mim" and masker is None:
            raise ConfigError("PretextAuxCollator aux='mim' needs a masker (a MaskedImageCollator)")
        if pool_per_image < 0 or (pool_per_image and (pool is None or len(pool) == 0)):
            raise ConfigError(f"pool_per_image={pool_per_image} needs a non-empty unlabelled pool")
        self.classification = classification
        self.aux = aux
        self.masker = masker
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
        views, targets = [], []
        for image, view in zip(images_of(examples), batch["pixel_values"]):
            generator = example_generator(cls.seed, cls.epoch, image, STREAM_AUX)
            for x in [view, *self._pool_views(image)]:
                if self.aux == "rotation":
                    k = quarter_turns(generator)
                    views.append(rotate(x, k))
                    targets.append(k)
                else:
                    views.append(x)
                    targets.append(self.masker.sample_mask(generator))
        batch["aux_pixel_values"] = torch.stack(views)
        if self.aux == "rotation":
            batch["aux_labels"] = torch.tensor(targets, dtype=torch.long)
        else:
            batch["aux_bool_masked_pos"] = torch.stack(targets)
        return batch
