"""The contract between an objective's loss and the one trainer.

A task wraps a plain Hugging Face model (``task.model``, which is what gets saved) and computes its
losses as *sums with item counts*. The trainer divides by the number of items in the whole
optimizer step, counted over every micro-batch and every process before the first backward, so
the loss is the same token-level mean whatever the accumulation or the number of processes.
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_ssl.models.architectures import training_flops

Sums = dict[str, tuple[torch.Tensor, torch.Tensor]]


class Task(nn.Module):
    """Subclass this: set ``loss_weights``, implement ``count_items`` and ``forward``.

    ``forward(**batch)`` returns ``{"losses": {name: (sum, count)}, "metrics": {name: (num, den)}}``.
    The training loss is ``sum_name loss_weights[name] * sum / count_over_step``. ``count_items(batch)``
    must return, without running the model, the counts that ``forward`` will report for each loss.
    Metrics are reported as ``num / den`` summed over the evaluation set (e.g. accuracy).
    """

    #: Weights of the named losses in the training loss.
    loss_weights: dict[str, float] = {"loss": 1.0}
    #: Report ``exp(loss)`` as perplexity for this task.
    reports_perplexity: bool = False

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, **batch) -> dict[str, Sums]:
        raise NotImplementedError

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens (or patches) processed, for throughput; default: attended tokens."""
        if "attention_mask" in batch:
            return int(batch["attention_mask"].sum())
        if "input_ids" in batch:
            return batch["input_ids"].numel()
        return 0


    def flop_heads(self, batch: dict[str, torch.Tensor]) -> list[tuple[nn.Module, int]]:
        """Parts of the model that run at fewer positions than the encoder, each with its number of
        positions in ``batch`` (a sparse MLM head: the masked tokens), for :meth:`flops`."""
        return []

    def flops(self, batch: dict[str, torch.Tensor]) -> float:
        """Training FLOPs (forward and backward) of ``batch``, for MFU; see
        :func:`nlp_ssl.models.architectures.training_flops`."""
        if getattr(self.model, "config", None) is None:
            return 0.0
        return training_flops(self.model, self.parameters(), batch, self.flop_heads(batch))


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100):
    """(loss sum, item count, correct count) over labels that are not ``ignore_index``."""
    logits = logits.reshape(-1, logits.shape[-1]).float()
    labels = labels.reshape(-1)
    keep = labels != ignore_index
    loss = nn.functional.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    correct = ((logits.argmax(-1) == labels) & keep).sum()
    return loss, keep.sum(), correct
