"""Sentence embeddings trained contrastively: SimCSE's loss on a bare encoder.

The embedding is the encoder's last hidden states pooled over the real tokens (:func:`pool`), and the
loss is the shared InfoNCE of :mod:`nlp_ssl.tasks.contrastive` (negatives gathered from every
process, the Task contract's rules under accumulation). The model is the bare encoder (a
``BertModel``, ``ModernBertModel`` ...) with every parameter in the loss, which is what is saved:
any ``*ForSequenceClassification`` or ``*ForMaskedLM`` loads it, its head newly initialised.
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_ssl.errors import ConfigError
from nlp_ssl.tasks.base import Sums
from nlp_ssl.tasks.contrastive import ContrastiveTask

POOLINGS = ("mean", "cls")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(rows, d): the masked mean of ``hidden`` (rows, length, d) over real tokens, or its first token."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling != "mean":
        raise ConfigError(f"pooling {pooling!r} is not one of {list(POOLINGS)}")
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class SentenceEmbeddingTask(ContrastiveTask):
    """InfoNCE between the pooled embeddings of rows ``2i`` and ``2i + 1`` (the same text under two
    dropout masks: :class:`~nlp_ssl.objectives.simcse.SimCSECollator`). Without a projection head:
    SimCSE's own evaluation reads the encoder's states, and so does a classifier fine-tuned later.

    In evaluation dropout is off, so the two views are one embedding: the validation loss then
    measures how far apart the texts are pushed, and retrieval (always right) is not reported.
    """

    def __init__(self, model: nn.Module, temperature: float = 0.05, pooling: str = "mean"):
        super().__init__(model, temperature)
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling {pooling!r} is not one of {list(POOLINGS)}")
        self.pooling = pooling

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)

    def rows_in(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["input_ids"].shape[0]

    def forward(self, **batch) -> dict[str, Sums]:
        out = super().forward(**batch)
        if not self.training:
            out["metrics"] = {}
        return out
