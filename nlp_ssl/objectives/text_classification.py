"""Batches of labelled texts for fine-tuning, with the keys of an auxiliary loss when one runs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nlp_ssl.errors import DataError
from nlp_ssl.objectives.masking import attention_mask_from_lengths, pad_column


class ClassificationCollator:
    """``[{"input_ids", "label", ...}]`` -> padded ``input_ids``, ``attention_mask``, ``labels``, and
    the auxiliary loss's keys from ``aux_keys`` (an objective's ``Objective.aux.batch_keys``: e.g. a
    masked copy for the masked LM), seeded per example like every other collator's.
    ``pad_token_id`` defaults to the tokenizer's.
    """

    def __init__(self, tokenizer, aux_keys=None, pad_token_id: int | None = None, label_key: str = "label",
                 regression: bool = False):
        self.pad_token_id = pad_token_id if pad_token_id is not None else tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise DataError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no pad token; set one (e.g. the EOS)")
        self.aux_keys = aux_keys
        self.label_key = label_key
        self.regression = regression

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.aux_keys, "set_epoch"):
            self.aux_keys.set_epoch(epoch)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        ids_np, lengths = pad_column(examples, "input_ids", self.pad_token_id)
        input_ids = torch.from_numpy(ids_np)
        attention_mask = attention_mask_from_lengths(lengths, input_ids.shape[1])
        try:
            if self.regression:
                labels = torch.tensor([float(e[self.label_key]) for e in examples], dtype=torch.float32)
            else:
                labels = torch.tensor([int(e[self.label_key]) for e in examples], dtype=torch.long)
        except KeyError:
            raise DataError(f"collator: example is missing the field {self.label_key!r}") from None
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = torch.from_numpy(pad_column(examples, "token_type_ids", 0)[0])
        if self.aux_keys is not None:
            batch.update(self.aux_keys(examples, batch))
        return batch
