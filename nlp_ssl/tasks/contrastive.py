"""Contrastive losses (NT-Xent / InfoNCE) for any modality, with negatives from every process.

Each row of a micro-batch is an embedding and belongs to a *group*: rows of one group are positives
of each other (the two views of an image in SimCLR, two images of one case in MICLe, two dropout
passes of a sentence in SimCSE, or more than two, supervised-contrastive style); every other row of
the **global micro-batch** (this micro-batch on every process, gathered with gradients) is a negative.

The loss is not a sum of independent per-item terms, so it fits the :class:`~nlp_ssl.tasks.base.Task`
contract this way: a process reports ``(sum of its own anchors' losses, its anchors)``; the trainer
divides by the anchors of the whole optimizer step on all processes and multiplies by the number of
processes, which DDP's gradient averaging divides out again. The gather's backward sums the
gradients that every process's anchors send to each process's embeddings (as
``torch.distributed.nn.all_gather`` does), so N processes × micro-batch b train exactly like one
process × N·b. Gradient accumulation does not widen the negatives: each micro-batch contrasts
within itself, and the step averages over the anchors of all its micro-batches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.tasks.base import Sums, Task


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_padded(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Each process's ``x`` (first dimension ``sizes[rank]``), via one all_gather of padded copies."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return [part[:n] for part, n in zip(parts, sizes)]


def row_counts(rows: int, device: torch.device) -> list[int]:
    """The number of rows on every process, in rank order."""
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([rows], device=device))
    return [int(c) for c in counts]


class _GatherWithGradients(torch.autograd.Function):
    """Every process's rows concatenated in rank order; backward: the sum over processes of the gradient
    that reaches this process's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        ctx.sizes = sizes
        return torch.cat(_gather_padded(x, sizes))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        sizes, rank = ctx.sizes, dist.get_rank()
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every process's anchors pull on every process's rows
        start = sum(sizes[:rank])
        return grad[start : start + sizes[rank]], None


def gather_with_gradients(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """``x`` of every process, concatenated in rank order, differentiable; ``x`` itself on one process.
    Processes may hold different numbers of rows (``sizes``, from :func:`row_counts`)."""
    if not _distributed():
        return x
    return _GatherWithGradients.apply(x, sizes or row_counts(x.shape[0], x.device))


def gather_groups(groups: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Group ids of every process, made distinct between processes: positives never cross processes."""
    parts = _gather_padded(groups, sizes)
    span = max((int(p.max()) + 1 for p in parts if len(p)), default=1)
    return torch.cat([part + rank * span for rank, part in enumerate(parts)])


def anchors_in(groups: torch.Tensor) -> torch.Tensor:
    """Rows that have at least one positive (another row of their group): the loss's items."""
    same = groups[:, None] == groups[None, :]
    return (same.sum(1) > 1).sum()


class ContrastiveSums(NamedTuple):
    #: Sum over this process's anchors of their loss.
    loss: torch.Tensor
    #: This process's anchors (rows with a positive).
    anchors: torch.Tensor
    #: Anchors whose most similar other row in the global micro-batch is one of their positives.
    retrieved: torch.Tensor


def info_nce(embeddings: torch.Tensor, groups: torch.Tensor, temperature: float, gather: bool = True) -> ContrastiveSums:
    """NT-Xent (SimCLR) on L2-normalised ``embeddings`` (n × d) whose positives are given by ``groups`` (n).

    For anchor i with positives P(i) among the other rows a ≠ i of the global micro-batch:
    ``loss_i = -1/|P(i)| Σ_{p∈P(i)} log( exp(s_ip/τ) / Σ_{a≠i} exp(s_ia/τ) )``, s the cosine
    similarity; with one positive this is SimCLR's NT-Xent, with several it is SupCon's L_out.
    ``groups`` are ids local to this micro-batch; ``gather=False`` keeps the negatives local.
    """
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if embeddings.ndim != 2 or groups.shape != embeddings.shape[:1]:
        raise DataError(f"contrastive loss: embeddings {tuple(embeddings.shape)} and groups {tuple(groups.shape)} "
                        "must be (n, d) and (n,)")
    local = nn.functional.normalize(embeddings.float(), dim=-1)
    groups = groups.to(local.device)
    everyone, all_groups, offset = local, groups, 0
    if gather and _distributed():
        sizes = row_counts(local.shape[0], local.device)
        everyone, all_groups = gather_with_gradients(local, sizes), gather_groups(groups, sizes)
        offset = sum(sizes[: dist.get_rank()])
    rows = torch.arange(local.shape[0], device=local.device) + offset
    logits = local @ everyone.T / temperature
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(local.shape[0]), rows] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    positive = (all_groups[rows][:, None] == all_groups[None, :]) & ~self_mask
    n_positive = positive.sum(1)
    is_anchor = n_positive > 0
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_anchor = -(log_prob.masked_fill(~positive, 0.0).sum(1)) / n_positive.clamp(min=1)
    loss = per_anchor[is_anchor].sum()
    nearest = logits.argmax(1)
    retrieved = (positive.gather(1, nearest[:, None]).squeeze(1) & is_anchor).sum()
    return ContrastiveSums(loss, is_anchor.sum(), retrieved)


class ContrastiveTask(Task):
    """A Task for contrastive objectives: subclass it and implement :meth:`embed`.

    The collator puts the ``views_per_example`` rows of one example next to each other (rows
    ``v·i … v·i + v - 1`` are example i's views); they are each other's positives. Loss ``"loss"``
    = (sum of the anchors' NT-Xent, anchors); metric ``"retrieval_accuracy"`` = anchors whose nearest
    row (cosine) in the global micro-batch is a positive.
    """

    views_per_example: int = 2

    def __init__(self, model: nn.Module, temperature: float = 0.2):
        super().__init__(model)
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def embed(self, **batch) -> torch.Tensor:
        """(rows, d) embeddings of the batch (before normalisation)."""
        raise NotImplementedError

    def rows_in(self, batch: dict[str, torch.Tensor]) -> int:
        raise NotImplementedError

    def groups(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = self.rows_in(batch)
        if rows % self.views_per_example:
            raise DataError(f"contrastive batch: {rows} rows is not a whole number of {self.views_per_example}-view examples")
        return torch.arange(rows) // self.views_per_example

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": anchors_in(self.groups(batch))}

    def forward(self, **batch) -> dict[str, Sums]:
        sums = info_nce(self.embed(**batch), self.groups(batch), self.temperature)
        return {"losses": {"loss": (sums.loss, sums.anchors)}, "metrics": {"retrieval_accuracy": (sums.retrieved, sums.anchors)}}
