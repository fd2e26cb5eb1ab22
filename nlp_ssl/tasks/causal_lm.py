"""Next-token loss for ``GPT2LMHeadModel`` (or any causal LM) as a sum over predicted tokens.

Labels are unshifted (as :class:`nlp_ssl.objectives.clm.CLMCollator` writes them); position ``t``
predicts label ``t + 1``, exactly as the HF model's own loss does. ``position_ids`` pass through, and
the model runs with ``use_cache=False`` so that transformers' packed-sequence detection (which a KV
cache turns off) keeps documents of a document-aware batch from attending to each other.
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_ssl.tasks.auxiliary import AuxiliaryLoss
from nlp_ssl.tasks.base import Task, cross_entropy_sum
from nlp_ssl.tasks.masked_lm import masked_positions_loss

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "langs")  # langs: XLM's causal LM


class CausalLMTask(Task):
    loss_weights = {"loss": 1.0}
    reports_perplexity = True

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": (batch["labels"][:, 1:] != -100).sum()}

    def forward(self, labels: torch.Tensor, **batch):
        inputs = {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}
        logits = self.model(**inputs, use_cache=False).logits
        loss, count, correct = cross_entropy_sum(logits[:, :-1], labels[:, 1:])
        return {"losses": {"loss": (loss, count)}, "metrics": {"accuracy": (correct, count)}}


class TiedLMHead(nn.Module):
    """Logits = hidden · Eᵀ with the classifier's own input embeddings E (GPT-2's tied ``lm_head``).

    Holds no parameter: it reads the embedding matrix through the classifier at call time, so the
    weight is shared, not copied, and the optimizer and DDP see it once.
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self._classifier = [classifier]  # a list, so that nn.Module does not register it twice

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(hidden, self._classifier[0].get_input_embeddings().weight)


def causal_lm_head(classifier: nn.Module, lm_model: nn.Module | None = None) -> nn.Module:
    """The LM head of the checkpoint (``lm_model``, loaded with it); for a tied head (GPT-2) just the
    classifier's own input embeddings, so no parameter is added."""
    output = lm_model.get_output_embeddings() if lm_model is not None else None
    tied = lm_model is None or getattr(lm_model.config, "tie_word_embeddings", True)
    if tied and getattr(output, "bias", None) is None:
        return TiedLMHead(classifier)
    if tied:
        output.weight = classifier.get_input_embeddings().weight
    return output


class CausalLMAux(AuxiliaryLoss):
    """Next-token loss beside a classifier (GPT-1): on the same input tokens, from the hidden states
    of the classification pass itself (one forward pass); ``lm_labels`` are the unshifted ids, -100
    at pads."""

    name = "lm"
    reads_task_pass = True

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def count_items(self, batch):
        return (batch["lm_labels"][:, 1:] != -100).sum()

    def forward(self, model, batch, hidden=None):
        return masked_positions_loss(hidden[:, :-1], batch["lm_labels"][:, 1:], self.head)
