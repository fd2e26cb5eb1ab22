"""Masked LM loss for ``XLMWithLMHeadModel`` (TLM and XLM's monolingual MLM).

The encoder runs with the batch's ``langs`` and ``position_ids`` (which restart at the target
sentence in TLM), and the output projection runs only at masked positions.
"""

from __future__ import annotations

import torch

from nlp_ssl.errors import ConfigError
from nlp_ssl.tasks.base import Task
from nlp_ssl.tasks.masked_lm import masked_positions_loss, mlm_parts

ENCODER_INPUTS = ("input_ids", "attention_mask", "langs", "position_ids")


class XLMMaskedLMTask(Task):
    loss_weights = {"loss": 1.0}
    reports_perplexity = True

    def __init__(self, model):
        super().__init__(model)
        if getattr(model.config, "asm", False):
            raise ConfigError("XLMMaskedLMTask needs config.asm = false: an adaptive softmax has no plain output projection")

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": (batch["labels"] != -100).sum()}

    def flop_heads(self, batch):
        return [(mlm_parts(self.model)[1], int((batch["labels"] != -100).sum()))]

    def forward(self, labels: torch.Tensor, **batch):
        inputs = {k: batch[k] for k in ENCODER_INPUTS if batch.get(k) is not None}
        encoder, head = mlm_parts(self.model)
        hidden = encoder(**inputs).last_hidden_state
        loss, count, correct = masked_positions_loss(hidden, labels, head)
        return {"losses": {"loss": (loss, count)}, "metrics": {"accuracy": (correct, count)}}
