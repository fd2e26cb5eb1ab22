"""Partners for contrastive fine-tuning on labelled examples: each example of a batch brings one more
labelled example, of its own class (a positive) or of another (a negative).

The draw is per example, from ``(seed, epoch, the example's tokens)`` (``masking.RowRandom``), so a
partner does not depend on the batch the example lands in, changes every epoch, and is the same after
a resume. An example is never its own partner unless its class holds no other text (one labelled
example per class): then the two rows are the same text, which only dropout tells apart (as in SimCSE).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.objectives.masking import RowRandom, pad_column

#: ``RowRandom`` streams: whether the partner is a positive, and which one.
_KIND, _WHICH = 101, 102


def _key(example: dict) -> tuple:
    return tuple(example["input_ids"])


class LabelPartners:
    """Draws a partner for each example from ``pool`` (the labelled rows: ``input_ids``, ``label``, and
    ``token_type_ids`` where the model has them): of the same class with probability ``positive_share``,
    else of another class."""

    def __init__(self, pool: Sequence[dict], seed: int, positive_share: float = 1.0, label_key: str = "label"):
        if not 0 <= positive_share <= 1:
            raise ConfigError(f"positive_share must be in [0, 1], got {positive_share}")
        self.rows = [dict(row) for row in pool]
        if not self.rows:
            raise DataError("contrastive fine-tuning: no labelled examples to draw partners from")
        self.seed, self.epoch, self.positive_share, self.label_key = int(seed), 0, float(positive_share), label_key
        try:
            self.labels = np.asarray([int(row[label_key]) for row in self.rows])
        except KeyError:
            raise DataError(f"contrastive fine-tuning: an example is missing the field {label_key!r}") from None
        texts: dict[tuple, int] = {}
        self.text_ids = np.asarray([texts.setdefault(_key(row), len(texts)) for row in self.rows])
        self.text_index = texts

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def candidates(self, label: int, text_id: int, positive: bool) -> np.ndarray:
        """Pool rows that may partner an example of ``label`` whose text is ``text_id``."""
        same = self.labels == label
        if not positive and (~same).any():
            return np.flatnonzero(~same)
        pick = same & (self.text_ids != text_id)
        if not pick.any():
            pick = same  # no other text of its class: the example itself
        if not pick.any():
            raise DataError(f"contrastive fine-tuning: label {label} has no example among the {len(self.rows)} "
                            "the partners are drawn from")
        return np.flatnonzero(pick)

    def draw(self, examples: Sequence[dict]) -> list[dict]:
        ids, lengths = pad_column(examples, "input_ids", 0)
        rng = RowRandom(self.seed, ids, lengths, self.epoch)
        kind, which = rng.uniform(_KIND, 1)[:, 0], rng.uniform(_WHICH, 1)[:, 0]
        partners = []
        for i, example in enumerate(examples):
            text_id = self.text_index.get(_key(example), -1)
            options = self.candidates(int(example[self.label_key]), text_id, bool(kind[i] < self.positive_share))
            partners.append(self.rows[options[min(int(which[i] * len(options)), len(options) - 1)]])
        return partners


class PartnerCollator:
    """A classification batch of the ``b`` examples followed by their ``b`` partners.

    ``collator`` (a ``ClassificationCollator``, with its auxiliary keys) makes the 2b-row batch; then
    ``labels`` of the partner rows become -100 (the cross-entropy is over the examples alone, as in
    plain fine-tuning), ``groups`` holds every row's class and ``partner`` marks the partner rows:
    row ``b + i`` is the partner of row ``i``.
    """

    def __init__(self, collator, partners: LabelPartners):
        self.collator, self.partners = collator, partners

    def set_epoch(self, epoch: int) -> None:
        self.partners.set_epoch(epoch)
        if hasattr(self.collator, "set_epoch"):
            self.collator.set_epoch(epoch)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        examples = list(examples)
        batch = self.collator(examples + self.partners.draw(examples))
        b = len(examples)
        batch["groups"] = batch["labels"].clone()
        batch["labels"][b:] = -100
        batch["partner"] = torch.arange(2 * b) >= b
        return batch
