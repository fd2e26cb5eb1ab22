"""Masked language modelling (BERT): 15% of tokens predicted, 80% [MASK] / 10% random / 10% kept."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nlp_ssl.config import check_ranges
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.objectives.masking import (
    TokenMasker,
    attention_mask_from_lengths,
    pad_column,
)


@dataclass
class MLMConfig:
    """The settings of masked language modelling (the ``mlm`` section of a recipe config)."""

    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    whole_word_mask: bool = False
    pad_to_multiple_of: int | None = None
    #: Project to the vocabulary only at masked positions (the checkpoint is unchanged).
    sparse_head: bool = True

    def __post_init__(self):
        check_ranges(self, mlm_probability="(0, 1)", mask_replace_prob="[0, 1]", random_replace_prob="[0, 1]",
                     pad_to_multiple_of="(0, inf)")

    def check_supported(self, recipe: str, *supported: str) -> None:
        """A setting that ``recipe``'s collator does not read must keep its default rather than be ignored."""
        default = MLMConfig()
        for f in dataclasses.fields(self):
            if f.name not in supported and getattr(self, f.name) != getattr(default, f.name):
                raise ConfigError(f"mlm.{f.name} is not supported by {recipe} (it reads {', '.join(supported)})")


def contiguous_word_index(word_ids: torch.Tensor) -> torch.Tensor:
    """Renumber word ids per row as 0, 1, 2, ... in order of appearance (``-1`` stays ``-1``)."""
    new_word = torch.ones_like(word_ids, dtype=torch.bool)
    new_word[:, 1:] = word_ids[:, 1:] != word_ids[:, :-1]
    new_word &= word_ids >= 0
    index = new_word.long().cumsum(1) - 1
    return torch.where(word_ids >= 0, index.clamp(min=0), torch.full_like(index, -1))


class MLMCollator:
    """Turn ``[{"input_ids": [...], ...}]`` into ``input_ids``, ``attention_mask`` and ``labels``.

    With ``whole_word_mask``, every example needs a ``word_ids`` field (the word each token belongs
    to, ``-1`` for none), which :func:`nlp_ssl.data.text.tokenize_and_pack` writes from the fast
    tokenizer's own word boundaries, so it works for WordPiece, BPE and byte-level BPE alike.
    ``token_type_ids`` pass through when present.
    """

    def __init__(
        self,
        tokenizer,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        whole_word_mask: bool = False,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
    ):
        self.masker = TokenMasker(tokenizer, mlm_probability, mask_replace_prob, random_replace_prob, seed)
        self.whole_word_mask = whole_word_mask
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_token_id = tokenizer.pad_token_id

    @property
    def is_special(self) -> np.ndarray:
        return self.masker.is_special

    def set_epoch(self, epoch: int) -> None:
        """Masks depend on the epoch too (dynamic masking); the trainer calls this."""
        self.masker.set_epoch(epoch)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        ids_np, lengths = pad_column(examples, "input_ids", self.pad_token_id, self.pad_to_multiple_of)
        attention_mask = attention_mask_from_lengths(lengths, ids_np.shape[1])
        word_ids = None
        if self.whole_word_mask:
            if "word_ids" not in examples[0]:
                raise DataError(
                    "whole_word_mask needs a 'word_ids' field in every example; tokenize with "
                    "nlp_ssl.data.text.tokenize_and_pack(..., word_ids=True)"
                )
            word_np, _ = pad_column(examples, "word_ids", -1, self.pad_to_multiple_of)
            word_ids = contiguous_word_index(torch.from_numpy(word_np))
        input_ids, labels = self.masker(ids_np, lengths, attention_mask, word_ids=word_ids)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = torch.from_numpy(pad_column(examples, "token_type_ids", 0, self.pad_to_multiple_of)[0])
        return batch


class MLMAuxKeys:
    """The masked LM's keys in a fine-tuning batch: ``lm_input_ids`` (a masked copy of the input)
    and ``lm_labels``, masked by an :class:`MLMCollator` on the same examples, so the masks are
    seeded by the example content like every other objective's."""

    def __init__(self, tokenizer, mlm_probability: float = 0.15, seed: int = 0):
        self.mlm = MLMCollator(tokenizer, mlm_probability=mlm_probability, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.mlm.set_epoch(epoch)

    def __call__(self, examples: Sequence[dict], batch: dict) -> dict[str, torch.Tensor]:
        masked = self.mlm([{"input_ids": e["input_ids"]} for e in examples])
        return {"lm_input_ids": masked["input_ids"], "lm_labels": masked["labels"]}


def unigram_baseline_accuracy(train_blocks, eval_blocks, collator: MLMCollator, batch_size: int = 256) -> float:
    """Accuracy at the masked validation positions of always predicting the commonest training token.

    The floor an MLM must clear to have learnt anything beyond token frequencies.
    """
    vocab = len(collator.is_special)
    if hasattr(train_blocks, "token_counts"):  # a prepared store counts its memory map a chunk at a time
        counts = train_blocks.token_counts(vocab)
    else:
        counts = np.bincount(np.asarray(train_blocks.with_format("numpy")["input_ids"]).ravel(), minlength=vocab)
    counts[collator.is_special] = 0
    guess = int(np.argmax(counts))
    hits = total = 0
    for start in range(0, len(eval_blocks), batch_size):
        rows = [eval_blocks[i] for i in range(start, min(start + batch_size, len(eval_blocks)))]
        labels = collator(rows)["labels"].numpy()
        labels = labels[labels != -100]
        hits += int((labels == guess).sum())
        total += labels.size
    return hits / max(total, 1)
