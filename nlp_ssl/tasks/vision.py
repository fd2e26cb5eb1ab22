"""Losses for the vision objectives, as sums with counts (see :mod:`nlp_ssl.tasks.base`).

The tasks compute the loss themselves from the model's outputs instead of reading ``output.loss``:
transformers returns a per-batch mean, which the trainer could not re-weight exactly across
micro-batches of different sizes or different numbers of masked pixels. :class:`PretextAuxTask` is
few-label fine-tuning with an auxiliary pretext loss, the vision counterpart of GPT-1's auxiliary LM
loss (:class:`~nlp_ssl.tasks.classification.SequenceClassificationTask`). :class:`SimCLRTask` is the
contrastive loss of :mod:`nlp_ssl.tasks.contrastive` on a ViT.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.models.architectures import training_flops
from nlp_ssl.tasks.auxiliary import AuxiliaryLoss, attach_auxiliary
from nlp_ssl.tasks.base import Sums, Task, cross_entropy_sum
from nlp_ssl.tasks.contrastive import ContrastiveTask


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

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": masked_pixel_count(batch["pixel_values"], batch["bool_masked_pos"], self.model.config.patch_size)}

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor, **_) -> dict[str, Sums]:
        bool_masked_pos = bool_masked_pos.bool()
        mask = pixel_mask(pixel_values, bool_masked_pos, self.model.config.patch_size)
        reconstruction = self.model(pixel_values=pixel_values, bool_masked_pos=bool_masked_pos).reconstruction
        return {"losses": {"loss": masked_l1_sum(reconstruction, pixel_values, mask)}, "metrics": {}}

    def flop_heads(self, batch):
        return [(self.model.decoder, _patches_in(batch["pixel_values"], self.model.config.patch_size))]  # not on [CLS]

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        return _patches_in(batch["pixel_values"], self.model.config.patch_size)


def pixel_mask(pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor, patch: int) -> torch.Tensor:
    """The patch mask upsampled to pixels: B × 1 × H × W."""
    batch, _, height, width = pixel_values.shape
    grid_h, grid_w = height // patch, width // patch
    if bool_masked_pos.shape != (batch, grid_h * grid_w):
        raise DataError(
            f"bool_masked_pos has shape {tuple(bool_masked_pos.shape)}, but {height}×{width} images with "
            f"patch_size {patch} need ({batch}, {grid_h * grid_w})"
        )
    grid = bool_masked_pos.reshape(batch, grid_h, grid_w)
    return grid.repeat_interleave(patch, 1).repeat_interleave(patch, 2).unsqueeze(1)


def masked_pixel_count(pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor, patch: int) -> torch.Tensor:
    """Pixel values under the mask (masked patches × patch² × channels): the SimMIM loss's count."""
    return bool_masked_pos.sum() * (patch * patch * pixel_values.shape[1])


def masked_l1_sum(reconstruction: torch.Tensor, pixel_values: torch.Tensor, mask: torch.Tensor) -> tuple:
    """(sum of |reconstruction - pixels| over every channel of the masked pixels, their count)."""
    error = (reconstruction.float() - pixel_values.float()).abs() * mask
    return error.sum(), mask.sum() * pixel_values.shape[1]


class RotationHead(nn.Module):
    """RotNet's 4-way classifier on the encoder's final [CLS] state, as ``ViTForImageClassification`` reads it."""

    def __init__(self, classifier: nn.Linear):
        super().__init__()
        if classifier.out_features != 4:
            raise ConfigError(f"a rotation head has 4 outputs, got {classifier.out_features}")
        self.classifier = classifier

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(hidden[:, 0])


class MaskedImageHead(nn.Module):
    """SimMIM's parts beside the encoder: the mask token that replaces hidden patches, and the one-layer
    decoder (1×1 conv to patch² × channels, then pixel shuffle) of ``ViTForMaskedImageModeling``."""

    def __init__(self, mask_token: nn.Parameter, decoder: nn.Module):
        super().__init__()
        self.mask_token = mask_token
        self.decoder = decoder

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        patches = hidden[:, 1:]
        batch, length, width = patches.shape
        side = math.isqrt(length)
        return self.decoder(patches.permute(0, 2, 1).reshape(batch, width, side, side))


class RotationAux(AuxiliaryLoss):
    """RotNet beside a classifier: loss ``rot``, the cross-entropy of :class:`RotationHead` on a second
    encoder pass over ``aux_pixel_values`` (rotated copies) against ``aux_labels``; count: aux images."""

    name = "rot"

    def __init__(self, head: RotationHead, patch_size: int):
        super().__init__()
        self.head = head
        self.patch_size = patch_size

    def count_items(self, batch):
        return (batch["aux_labels"] != -100).sum()

    def forward(self, model, batch, hidden=None):
        hidden = model.vit(pixel_values=batch["aux_pixel_values"]).last_hidden_state
        return cross_entropy_sum(self.head(hidden), batch["aux_labels"])

    def tokens_in(self, batch):
        return _patches_in(batch["aux_pixel_values"], self.patch_size)

    def flops(self, model, batch):  # the head runs at [CLS] of each aux image
        return _aux_pass_flops(model, self.head, batch["aux_pixel_values"], batch["aux_pixel_values"].shape[0])


class MaskedImageAux(AuxiliaryLoss):
    """SimMIM beside a classifier: loss ``mim``, L1 on the masked pixels of ``aux_pixel_values``
    (count: masked pixel values), from :class:`MaskedImageHead` with its mask token put in place of the
    masked patch embeddings (``aux_bool_masked_pos``)."""

    name = "mim"

    def __init__(self, head: MaskedImageHead, patch_size: int):
        super().__init__()
        self.head = head
        self.patch_size = patch_size

    def count_items(self, batch):
        return masked_pixel_count(batch["aux_pixel_values"], batch["aux_bool_masked_pos"], self.patch_size)

    def _masked_hidden(self, model, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden states with masked patch embeddings replaced by the mask token,
        exactly as ``ViTEmbeddings`` does it for ``ViTForMaskedImageModeling``."""
        mask = bool_masked_pos.unsqueeze(-1)

        def replace(_module, _inputs, patches):
            token = self.head.mask_token.to(patches.dtype)
            weight = mask.to(patches.dtype)
            return patches * (1.0 - weight) + token * weight

        hook = model.vit.embeddings.patch_embeddings.register_forward_hook(replace)
        try:
            return model.vit(pixel_values=pixel_values).last_hidden_state
        finally:
            hook.remove()

    def forward(self, model, batch, hidden=None):
        images, masked = batch["aux_pixel_values"], batch["aux_bool_masked_pos"].bool()
        reconstruction = self.head(self._masked_hidden(model, images, masked))
        loss, count = masked_l1_sum(reconstruction, images, pixel_mask(images, masked, self.patch_size))
        return loss, count, None

    def tokens_in(self, batch):
        return _patches_in(batch["aux_pixel_values"], self.patch_size)

    def flops(self, model, batch):  # the mask token is looked up, not multiplied: only the decoder counts
        images = batch["aux_pixel_values"]
        return _aux_pass_flops(model, self.head.decoder, images, _patches_in(images, self.patch_size))


def _aux_pass_flops(model, head: nn.Module, images: torch.Tensor, positions: int) -> float:
    """The second encoder pass and the auxiliary head at ``positions``."""
    encoder = [p for name, p in model.named_parameters() if not name.startswith("classifier.")]
    return training_flops(model, [*encoder, *head.parameters()], {"pixel_values": images}, [(head, positions)])


class PretextAuxTask(Task):
    """Image classification + ``aux_weight`` × an auxiliary pretext loss: ``L = L_cls + λ·L_aux``.

    ``cls``: cross-entropy of the plain ``ViTForImageClassification`` on ``pixel_values`` (count:
    labelled images). The auxiliary loss (:class:`RotationAux`, :class:`MaskedImageAux`, or any
    :class:`~nlp_ssl.tasks.auxiliary.AuxiliaryLoss` an image objective lends) runs the same encoder
    again on its copies (:class:`~nlp_ssl.objectives.image_classification.PretextAuxCollator`).
    ``aux_weight = 0`` (or no ``aux``) is plain fine-tuning: no head, one loss ``cls``. The head is not
    part of ``self.model``, so the saved classifier is a plain ``ViTForImageClassification``.
    """

    def __init__(self, model: nn.Module, aux: AuxiliaryLoss | None = None, aux_weight: float = 0.5):
        super().__init__(model)
        attach_auxiliary(self, aux, aux_weight)

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        counts = {"cls": (batch["labels"] != -100).sum()}
        if self.aux is not None:
            counts[self.aux.name] = self.aux.count_items(batch)
        return counts

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor, **batch) -> dict[str, Sums]:
        logits = self.model(pixel_values=pixel_values).logits
        loss, count, correct = cross_entropy_sum(logits, labels)
        out = {"losses": {"cls": (loss, count)}, "metrics": {"accuracy": (correct, count)}}
        if self.aux is not None:
            aux_loss, aux_count, aux_correct = self.aux(self.model, batch)
            out["losses"][self.aux.name] = (aux_loss, aux_count)
            if aux_correct is not None:
                out["metrics"][f"{self.aux.name}_accuracy"] = (aux_correct, aux_count)
        return out

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        """Patches through the encoder: the classification pass and the auxiliary one."""
        aux = self.aux.tokens_in(batch) if self.aux is not None else 0
        return _patches_in(batch["pixel_values"], self.model.config.patch_size) + aux

    def flops(self, batch: dict[str, torch.Tensor]) -> float:
        """Both passes: the classifier at [CLS] of each labelled image, and the auxiliary loss's own."""
        model = self.model
        main = training_flops(model, model.parameters(), batch, [(model.classifier, batch["pixel_values"].shape[0])])
        return main + (self.aux.flops(model, batch) if self.aux is not None else 0.0)


class SimCLRTask(ContrastiveTask):
    """SimCLR on a ``ViTModel``: NT-Xent between the projections of the two views of each image.

    The projection head is the model's pooler (a dense layer and activation on the final [CLS] state,
    saved with the model, as SimCLRv2 keeps the head's first layer) followed by ``projection``, the
    rest of the head, which is not part of ``self.model`` and so is dropped from the saved folder.
    Rows 2i and 2i + 1 of ``pixel_values`` are the views of example i
    (:class:`~nlp_ssl.objectives.simclr.TwoViewCollator`).
    """

    def __init__(self, model: nn.Module, projection: nn.Module, temperature: float = 0.2):
        super().__init__(model, temperature)
        if getattr(model, "pooler", None) is None:
            raise ConfigError("SimCLRTask needs a ViTModel with its pooler (the projection head's first layer)")
        self.projection = projection

    def embed(self, pixel_values: torch.Tensor, **_) -> torch.Tensor:
        return self.projection(self.model(pixel_values=pixel_values).pooler_output)

    def rows_in(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["pixel_values"].shape[0]

    def flop_heads(self, batch):
        rows = self.rows_in(batch)  # on the [CLS] position only
        return [(self.model.pooler, rows), (self.projection, rows)]

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        return _patches_in(batch["pixel_values"], self.model.config.patch_size)


def projection_head(config, layers: int, output_dim: int) -> nn.Sequential:
    """The projection layers after the ViT pooler (which is layer 1 of ``layers``): for 3 layers a
    hidden Linear + activation, then the output Linear; initialised as ViT initialises its layers."""
    if layers not in (2, 3):
        raise ConfigError(f"projection_layers must be 2 or 3, got {layers}")
    width = config.pooler_output_size
    parts: list[nn.Module] = []
    if layers == 3:
        parts += [nn.Linear(width, width), nn.GELU()]
    parts.append(nn.Linear(width, output_dim))
    head = nn.Sequential(*parts)
    for module in head:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=config.initializer_range)
            nn.init.zeros_(module.bias)
    return head
