"""Unsupervised SimCSE (Gao et al., 2021): a text and itself, encoded twice with dropout on, are a
positive pair; the other texts of the global micro-batch are its negatives.

Dropout is the only augmentation, so the collator draws nothing: it puts each text twice, side by
side (rows ``2i`` and ``2i + 1``), and the encoder's dropout masks make the two views differ. The
examples are whole texts truncated to ``data.block_size`` tokens (:mod:`nlp_ssl.data.whole_texts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from nlp_ssl.config import check_ranges
from nlp_ssl.errors import DataError
from nlp_ssl.objectives.masking import attention_mask_from_lengths, pad_column

Pooling = Literal["mean", "cls"]


@dataclass
class SimCSEConfig:
    """The settings of SimCSE (the ``simcse`` section of a recipe config)."""

    #: InfoNCE temperature; SimCSE's 0.05.
    temperature: float = 0.05
    #: ``mean``: the masked mean of the last hidden states, the sentence embedding that
    #: sentence-transformers trained all-MiniLM-L6-v2 with (and ModernBERT's classifier reads);
    #: ``cls``: the first token's last hidden state.
    pooling: Pooling = "mean"
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        check_ranges(self, temperature="(0, inf)", pad_to_multiple_of="(0, inf)")


class SimCSECollator:
    """``[{"input_ids": [...]}]`` -> ``input_ids``/``attention_mask`` with every text twice (rows
    ``2i``, ``2i + 1``): the two dropout views of :class:`~nlp_ssl.tasks.sentence_embedding.SentenceEmbeddingTask`.
    Pure and random-free: the views differ only by the encoder's dropout."""

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None):
        self.pad_token_id = tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise DataError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no pad token; set one")
        self.pad_to_multiple_of = pad_to_multiple_of

    def set_epoch(self, epoch: int) -> None:
        """Nothing is drawn, so every epoch's batches are the same (the dropout masks are not)."""

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        twice = [e for e in examples for _ in range(2)]
        ids, lengths = pad_column(twice, "input_ids", self.pad_token_id, self.pad_to_multiple_of)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": attention_mask_from_lengths(lengths, ids.shape[1])}
