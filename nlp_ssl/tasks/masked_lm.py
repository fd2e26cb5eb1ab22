"""Masked LM loss computed only where a token is predicted.

BERT's ``gather_indexes`` (and cramming) project to the vocabulary only at masked positions: with 15%
masking that skips 85% of the largest matrix multiply in a small model. The model stays a plain HF
masked LM (``BertForMaskedLM``, ``ModernBertForMaskedLM``...), so the checkpoint and its ``fill-mask``
logits are unchanged. Where each masked LM keeps its encoder and head is its entry in
:mod:`nlp_ssl.models.architectures`. On CPU, a head that ends in a plain ``nn.Linear`` projects
and takes the loss chunk by chunk (:mod:`nlp_ssl.tasks.linear_cross_entropy`).
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_ssl.errors import ConfigError
from nlp_ssl.models.architectures import ARCHITECTURES, mlm_parts
from nlp_ssl.tasks.auxiliary import AuxiliaryLoss
from nlp_ssl.tasks.base import Task, cross_entropy_sum
from nlp_ssl.tasks.linear_cross_entropy import linear_cross_entropy_sum, use_fused

__all__ = ["MaskedLMAux", "MaskedLMTask", "masked_lm_head", "masked_positions_loss", "mlm_parts"]


def masked_positions_loss(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module):
    """Apply ``head`` to the hidden states of predicted tokens only; (loss sum, count, correct)."""
    keep = labels != -100
    selected, targets = hidden[keep], labels[keep]
    split = _split_projection(head)
    if split is not None and use_fused(selected):
        transform, projection = split
        return linear_cross_entropy_sum(transform(selected), projection, targets)
    return cross_entropy_sum(head(selected), targets)


def _split_projection(head: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """(what comes before the vocabulary projection, the projection) of a head that is a plain
    ``nn.Linear`` or an ``nn.Sequential`` ending in one; None for any other head."""
    if type(head) is nn.Linear:
        return nn.Identity(), head
    if type(head) is nn.Sequential and len(head) and type(head[-1]) is nn.Linear:
        return head[:-1], head[-1]
    return None


class MaskedLMTask(Task):
    loss_weights = {"loss": 1.0}
    reports_perplexity = True

    def __init__(self, model, sparse: bool = True):
        super().__init__(model)
        self.sparse = sparse and mlm_parts(model) is not None

    def count_items(self, batch):
        return {"loss": (batch["labels"] != -100).sum()}

    def flop_heads(self, batch):
        if not self.sparse:
            return []
        return [(mlm_parts(self.model)[1], int((batch["labels"] != -100).sum()))]

    def forward(self, labels, **inputs):
        if not self.sparse:
            logits = self.model(**inputs).logits
            loss, count, correct = cross_entropy_sum(logits, labels)
        else:
            encoder, head = mlm_parts(self.model)
            hidden = encoder(**inputs).last_hidden_state
            loss, count, correct = masked_positions_loss(hidden, labels, head)
        return {"losses": {"loss": (loss, count)}, "metrics": {"accuracy": (correct, count)}}


def masked_lm_head(classifier: nn.Module, lm_model: nn.Module) -> nn.Module:
    """The checkpoint's own MLM head, taken from ``lm_model`` (the checkpoint loaded with it), its
    decoder tied to ``classifier``'s input embeddings where the config ties them."""
    parts = mlm_parts(lm_model)
    if parts is None:
        known = sorted(t for t, a in ARCHITECTURES.items() if a.mlm_encoder)
        raise ConfigError(f"the masked LM's auxiliary loss: no known MLM head for model type "
                          f"{lm_model.config.model_type!r}; supported: {known}")
    if getattr(lm_model.config, "tie_word_embeddings", True):
        lm_model.get_output_embeddings().weight = classifier.get_input_embeddings().weight
    return parts[1]


class MaskedLMAux(AuxiliaryLoss):
    """Masked LM beside a classifier (BERT, XLM): the encoder runs a second time, on the masked copy
    ``lm_input_ids`` (the classifier must see the unmasked text); ``lm_labels`` are -100 except at
    masked positions. The head is the checkpoint's own (:func:`masked_lm_head`)."""

    name = "lm"

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def count_items(self, batch):
        return (batch["lm_labels"] != -100).sum()

    def forward(self, model, batch, hidden=None):
        inputs = {k: v for k, v in batch.items() if k in ENCODER_INPUTS and v is not None}
        hidden = model.base_model(**{**inputs, "input_ids": batch["lm_input_ids"]})[0]
        return masked_positions_loss(hidden, batch["lm_labels"], self.head)


#: Keys of a classification batch that an encoder takes.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "langs", "position_ids")
