"""BERT's pretraining loss: masked LM plus next sentence (or sentence order) prediction.

The two losses have different units (masked tokens, sentence pairs), so each is its own
``(sum, count)`` and the trainer averages each over its own items, as ``BertForPreTraining`` does
(mean MLM loss + mean NSP loss). The vocabulary projection runs only at masked positions.
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_ssl.tasks.base import Task
from nlp_ssl.tasks.masked_lm import masked_positions_loss

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


class BertPretrainingTask(Task):
    """For ``BertForPreTraining``: losses ``mlm`` and ``nsp``; metrics ``mlm_accuracy`` and ``nsp_accuracy``."""

    loss_weights = {"mlm": 1.0, "nsp": 1.0}
    reports_perplexity = False

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        return {"mlm": (labels != -100).sum(), "nsp": torch.tensor(labels.shape[0], device=labels.device)}

    def flop_heads(self, batch):
        labels = batch["labels"]
        masked, pairs = int((labels != -100).sum()), labels.shape[0]
        return [(self.model.cls.predictions, masked), (self.model.bert.pooler, pairs), (self.model.cls.seq_relationship, pairs)]

    def forward(self, labels: torch.Tensor, next_sentence_label: torch.Tensor, **batch):
        inputs = {k: batch[k] for k in ENCODER_INPUTS if batch.get(k) is not None}
        out = self.model.bert(**inputs)
        mlm_loss, mlm_count, mlm_correct = masked_positions_loss(out.last_hidden_state, labels, self.model.cls.predictions)
        nsp_logits = self.model.cls.seq_relationship(out.pooler_output).float()
        nsp_loss = nn.functional.cross_entropy(nsp_logits, next_sentence_label, reduction="sum")
        nsp_count = torch.tensor(next_sentence_label.shape[0], device=nsp_logits.device)
        nsp_correct = (nsp_logits.argmax(-1) == next_sentence_label).sum()
        return {
            "losses": {"mlm": (mlm_loss, mlm_count), "nsp": (nsp_loss, nsp_count)},
            "metrics": {"mlm_accuracy": (mlm_correct, mlm_count), "nsp_accuracy": (nsp_correct, nsp_count)},
        }
