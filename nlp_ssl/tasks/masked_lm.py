"""Masked LM loss computed only where a token is predicted.

BERT's ``gather_indexes`` (and cramming) project to the vocabulary only at masked positions: with 15%
masking that skips 85% of the largest matrix multiply in a small model. The model stays a plain
``BertForMaskedLM``, so the checkpoint and its ``fill-mask`` logits are unchanged.
"""

from __future__ import annotations

import torch

from nlp_ssl.tasks.base import Task, cross_entropy_sum

# model_type -> (encoder, hidden -> vocabulary logits) of a masked LM, for the sparse path.
SPARSE_HEADS = {
    "bert": lambda m: (m.bert, m.cls),
    "roberta": lambda m: (m.roberta, m.lm_head),
    "xlm-roberta": lambda m: (m.roberta, m.lm_head),
    "modernbert": lambda m: (m.model, lambda hidden: m.decoder(m.head(hidden))),
}


def masked_positions_loss(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module):
    """Apply ``head`` to the hidden states of predicted tokens only; (loss sum, count, correct)."""
    keep = labels != -100
    logits = head(hidden[keep])
    return cross_entropy_sum(logits, labels[keep])


class MaskedLMTask(Task):
    loss_weights = {"loss": 1.0}
    reports_perplexity = True

    def __init__(self, model, sparse: bool = True):
        super().__init__(model)
        self.sparse_parts = SPARSE_HEADS.get(model.config.model_type) if sparse else None

    def count_items(self, batch):
        return {"loss": (batch["labels"] != -100).sum()}

    def forward(self, labels, **inputs):
        if self.sparse_parts is None:
            logits = self.model(**inputs).logits
            loss, count, correct = cross_entropy_sum(logits, labels)
        else:
            encoder, head = self.sparse_parts(self.model)
            hidden = encoder(**inputs).last_hidden_state
            loss, count, correct = masked_positions_loss(hidden, labels, head)
        return {"losses": {"loss": (loss, count)}, "metrics": {"accuracy": (correct, count)}}
