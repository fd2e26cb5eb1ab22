"""Losses for the vision objectives, as sums with counts (see :mod:`nlp_ssl.tasks.base`).

Both tasks compute the loss themselves from the model's outputs instead of reading ``output.loss``:
transformers returns a per-batch mean, which the trainer could not re-weight exactly across
micro-batches of different sizes or different numbers of masked pixels.
"""

from __future__ import annotations

import torch

from nlp_ssl.errors import DataError
from nlp_ssl.tasks.base import Sums, Task, cross_entropy_sum


def _patches_in(pixel_values: torch.Tensor, patch_size: int) -> int:
    batch, _, height, width = pixel_values.shape
    return batch * (height // patch_size) * (width // patch_size)


class ImageClassificationTask(Task):
    """Cross-entropy over ``labels`` for a ``ViTForImageClassification``.

    Serves rotation pretraining (``num_labels=4`` with :class:`~nlp_ssl.objectives.rotation.RotationCollator`)
    and supervised fine-tuning alike. Loss ``"loss"`` = sum of per-image CE, count = labelled images
    (labels of -100 are skipped); metric ``"accuracy"`` = (correct, labelled images).
    """

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": (batch["labels"] != -100).sum()}

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor, **_) -> dict[str, Sums]:
        logits = self.model(pixel_values=pixel_values).logits
        loss, count, correct = cross_entropy_sum(logits, labels)
        return {"losses": {"loss": (loss, count)}, "metrics": {"accuracy": (correct, count)}}

    def flop_heads(self, batch):
        return [(self.model.classifier, batch["pixel_values"].shape[0])]  # on the [CLS] position only

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        return _patches_in(batch["pixel_values"], self.model.config.patch_size)


class MaskedImageModelingTask(Task):
    """SimMIM's L1 loss on the masked pixels only, for a ``ViTForMaskedImageModeling``.

    Loss ``"loss"`` = sum of ``|reconstruction - pixel_values|`` over every channel of every pixel
    in a masked patch; count = the number of those pixel values (masked pixels × channels). Summed
    over a batch and divided by the count, this is transformers' own ``loss``, which divides by
    ``(mask.sum() + 1e-5) / num_channels``, less that epsilon.
    """

    def _pixel_mask(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor) -> torch.Tensor:
        """The patch mask upsampled to pixels: B × 1 × H × W."""
        patch = self.model.config.patch_size
        batch, _, height, width = pixel_values.shape
        grid_h, grid_w = height // patch, width // patch
        if bool_masked_pos.shape != (batch, grid_h * grid_w):
            raise DataError(
                f"bool_masked_pos has shape {tuple(bool_masked_pos.shape)}, but {height}×{width} images with "
                f"patch_size {patch} need ({batch}, {grid_h * grid_w})"
            )
        grid = bool_masked_pos.reshape(batch, grid_h, grid_w)
        return grid.repeat_interleave(patch, 1).repeat_interleave(patch, 2).unsqueeze(1)

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        patch = self.model.config.patch_size
        channels = batch["pixel_values"].shape[1]
        return {"loss": batch["bool_masked_pos"].sum() * (patch * patch * channels)}

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor, **_) -> dict[str, Sums]:
        bool_masked_pos = bool_masked_pos.bool()
        mask = self._pixel_mask(pixel_values, bool_masked_pos)
        reconstruction = self.model(pixel_values=pixel_values, bool_masked_pos=bool_masked_pos).reconstruction
        error = (reconstruction.float() - pixel_values.float()).abs() * mask
        count = mask.sum() * pixel_values.shape[1]
        return {"losses": {"loss": (error.sum(), count)}, "metrics": {}}

    def flop_heads(self, batch):
        return [(self.model.decoder, _patches_in(batch["pixel_values"], self.model.config.patch_size))]  # not on [CLS]

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        return _patches_in(batch["pixel_values"], self.model.config.patch_size)
