"""Causal language modelling (GPT-2) on packed blocks, optionally without attention across documents.

``labels`` are the input ids themselves: ``GPT2LMHeadModel`` (and :class:`nlp_ssl.tasks.causal_lm.CausalLMTask`)
shift them by one, so position ``t`` predicts token ``t + 1``.

Document-aware mode: a packed block holds several documents joined by EOS. Each EOS belongs to the
document it ends (it is predicted from that document), and the token after it starts a new document.
``position_ids`` restart at 0 there, and no ``attention_mask`` is emitted: transformers 5 then
detects packed sequences from the position ids (``masking_utils.find_packed_sequence_indices``) and
builds a block-diagonal causal mask for sdpa, eager, flex and flash attention alike, with no
``B x T x T`` tensor in the batch. (A 2-D ``attention_mask`` or a KV cache turns that detection off,
so call the model with ``use_cache=False``, as ``CausalLMTask`` does.) Right padding needs no mask
under causal attention: real tokens never look ahead at the pads, each pad gets position 0 (so it
is a one-token document of its own) and label -100.

The first token of each document after the first is labelled -100: in a document on its own it has
no context and is never predicted, and predicting it from the previous document's EOS would leak
that document. So the loss of a document-aware block is exactly the sum of the per-document losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nlp_ssl.config import check_ranges
from nlp_ssl.data.text import document_separator
from nlp_ssl.errors import DataError
from nlp_ssl.objectives.masking import attention_mask_from_lengths, pad_column


@dataclass
class CLMConfig:
    """The settings of causal language modelling (the ``clm`` section of a recipe config)."""

    #: Packed documents do not attend to each other (positions restart after each EOS).
    document_aware: bool = True
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        check_ranges(self, pad_to_multiple_of="(0, inf)")


def document_position_ids(input_ids: torch.Tensor, lengths: torch.Tensor, separator_id: int) -> torch.Tensor:
    """Positions that restart at 0 on the token after each ``separator_id``; every pad gets 0."""
    batch, width = input_ids.shape
    index = torch.arange(width).expand(batch, width)
    starts = torch.zeros_like(input_ids, dtype=torch.bool)
    starts[:, 0] = True
    starts[:, 1:] = input_ids[:, :-1] == separator_id
    # Index of the last document start at or before each token, then distance to it.
    last_start = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    positions = index - last_start
    return positions.masked_fill(index >= lengths[:, None], 0)


class CLMCollator:
    """Turn ``[{"input_ids": [...]}]`` into ``input_ids``, ``labels`` and ``attention_mask`` or ``position_ids``.

    ``document_aware=False``: ``attention_mask`` (1 on tokens) and labels = input ids, -100 at pads.
    ``document_aware=True``: ``position_ids`` restarting after every document separator (the
    tokenizer's EOS, or SEP for a BERT tokenizer, as :func:`nlp_ssl.data.text.tokenize_and_pack`
    uses), no ``attention_mask``, and -100 also at each document's first token (see the module doc).
    Pads use the tokenizer's pad token, or its EOS when it has none (GPT-2's own tokenizer).
    """

    def __init__(self, tokenizer, document_aware: bool = False, pad_to_multiple_of: int | None = None):
        self.separator_id = document_separator(tokenizer)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.separator_id
        self.document_aware = document_aware
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        ids_np, lengths_np = pad_column(examples, "input_ids", self.pad_token_id, self.pad_to_multiple_of)
        if int(lengths_np.min()) == 0:
            raise DataError(f"CLM collator: example {int(lengths_np.argmin())} has an empty 'input_ids'")
        input_ids = torch.from_numpy(ids_np)
        lengths = torch.from_numpy(lengths_np)
        attention_mask = attention_mask_from_lengths(lengths_np, input_ids.shape[1])
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        if not self.document_aware:
            return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        position_ids = document_position_ids(input_ids, lengths, self.separator_id)
        labels = labels.masked_fill(position_ids == 0, -100)
        return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}


def clm_aux_keys(examples: Sequence[dict], batch: dict) -> dict[str, torch.Tensor]:
    """The causal LM's key in a fine-tuning batch: ``lm_labels`` = the input ids, -100 at pads."""
    return {"lm_labels": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)}
