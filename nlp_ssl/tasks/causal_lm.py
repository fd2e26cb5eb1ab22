"""Next-token loss for ``GPT2LMHeadModel`` (or any causal LM) as a sum over predicted tokens.

Labels are unshifted (as :class:`nlp_ssl.objectives.clm.CLMCollator` writes them); position ``t``
predicts label ``t + 1``, exactly as the HF model's own loss does. ``position_ids`` pass through, and
the model runs with ``use_cache=False`` so that transformers' packed-sequence detection (which a KV
cache turns off) keeps documents of a document-aware batch from attending to each other.
"""

from __future__ import annotations

import torch

from nlp_ssl.tasks.base import Task, cross_entropy_sum

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
