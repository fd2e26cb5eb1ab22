"""Next sentence prediction (BERT) and sentence order prediction (ALBERT), with MLM on top.

The pairs are built once, over the whole corpus, by :mod:`nlp_ssl.data.nsp_pairs` (a random B
comes from another document); this collator pads them and masks their tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nlp_ssl.errors import DataError
from nlp_ssl.objectives.mlm import MLMCollator


class NSPCollator:
    """Pad NSP/SOP pairs and mask 15% of their tokens (never [CLS]/[SEP]/[PAD]), as BERT pretraining does.

    Output: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels`` and
    ``next_sentence_label``, what ``BertForPreTraining`` takes. The masking is
    :class:`nlp_ssl.objectives.mlm.MLMCollator`'s, so it is seeded per example the same way.
    """

    def __init__(
        self,
        tokenizer,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
    ):
        self.mlm = MLMCollator(
            tokenizer,
            mlm_probability=mlm_probability,
            mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob,
            pad_to_multiple_of=pad_to_multiple_of,
            seed=seed,
        )

    def set_epoch(self, epoch: int) -> None:
        """Other masks each epoch (the trainer calls this)."""
        self.mlm.set_epoch(epoch)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        for index, example in enumerate(examples):
            for key in ("token_type_ids", "next_sentence_label"):
                if key not in example:
                    raise DataError(f"NSP collator: example {index} has no field {key!r}; build it with build_nsp_dataset")
            label = example["next_sentence_label"]
            if label not in (0, 1):
                raise DataError(f"NSP collator: example {index} has next_sentence_label {label!r}; expected 0 or 1")
        batch = self.mlm([{k: e[k] for k in ("input_ids", "token_type_ids")} for e in examples])
        batch["next_sentence_label"] = torch.from_numpy(np.array([e["next_sentence_label"] for e in examples], dtype=np.int64))
        return batch
