"""Output projection and cross-entropy in one pass over row chunks, for large vocabularies on CPU.

``F.cross_entropy(F.linear(h, W, b), y)`` writes the whole ``rows x vocabulary`` logit matrix, then
its log-softmax, then their gradients: four passes over a matrix far larger than the CPU caches (40
MB for the default MLM's 1,200 masked tokens x 8,192 words). Here each chunk of rows gets its logits,
its loss, its argmax and its share of the gradients while it is still in cache, and the backward pass
only scales the gradients kept from the forward pass. The numbers are those of the plain
formulation up to float summation order; on a 2-core AVX2 CPU the projection, loss and
gradients of that head took 30% less CPU time (``benchmarks/bench_trainer.py --profile``).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

#: Logit elements per chunk: 2**22 floats (16 MB) stay in a CPU's last-level cache while they are
#: used; fewer, larger chunks also mean fewer rounds of the thread pool per step.
CHUNK_ELEMENTS = 2**22


def chunk_rows(vocab_size: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(vocab_size, 1))


class _LinearCrossEntropy(torch.autograd.Function):
    """(loss sum, correct count) of ``h @ W.T + b`` against ``labels`` (all predicted, no -100)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, compute_dtype, grads: tuple[bool, bool, bool]):
        rows = chunk_rows(weight.shape[0])
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        want_h, want_w, want_b = grads
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if want_b else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h = hidden[start:start + rows].to(compute_dtype)
            y = labels[start:start + rows]
            logits = F.linear(h, w, b).float()
            top, top_index = logits.max(dim=-1)  # the first maximum, as argmax
            correct += (top_index == y).sum()
            picked = logits.gather(1, y[:, None]).squeeze(1)
            probs = logits.sub_(top[:, None]).exp_()  # in place: the chunk's logits are not needed again
            total = probs.sum(dim=-1)
            loss += (top + total.log() - picked).sum()
            if grad_h is None and grad_w is None and grad_b is None:
                continue
            grad = probs.div_(total[:, None])  # softmax - one-hot: d loss / d logits
            grad[torch.arange(len(y), device=y.device), y] -= 1.0
            if grad_b is not None:
                grad_b += grad.sum(dim=0)
            grad = grad.to(compute_dtype)
            if grad_h is not None:
                grad_h[start:start + rows] = grad @ w
            if grad_w is not None:
                grad_w += (grad.t() @ h).float()
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, grad_correct):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        return (
            (grad_h * grad_loss).to(h_dtype) if grad_h is not None else None,
            (grad_w * grad_loss).to(w_dtype) if grad_w is not None else None,
            (grad_b * grad_loss).to(b_dtype) if grad_b is not None else None,
            None, None, None,
        )


def linear_cross_entropy_sum(hidden: torch.Tensor, linear: torch.nn.Linear, labels: torch.Tensor):
    """(loss sum, count, correct count) of ``linear(hidden)`` against ``labels`` (none of them -100),
    as :func:`nlp_ssl.tasks.base.cross_entropy_sum` computes them, without the full logit matrix.

    Under autocast the projection runs in the autocast dtype and the softmax in fp32, as the plain
    ``linear`` followed by ``.float()`` would.
    """
    device = hidden.device.type
    weight, bias = linear.weight, linear.bias
    if torch.is_autocast_enabled(device):
        compute_dtype = torch.get_autocast_dtype(device)
    else:
        compute_dtype = torch.result_type(hidden, weight)
    enabled = torch.is_grad_enabled()
    grads = (enabled and hidden.requires_grad, enabled and weight.requires_grad,
             enabled and bias is not None and bias.requires_grad)
    with torch.autocast(device, enabled=False):
        loss, correct = _LinearCrossEntropy.apply(hidden, weight, bias, labels, compute_dtype, grads)
    return loss, torch.tensor(labels.numel(), device=labels.device), correct


def use_fused(hidden: torch.Tensor) -> bool:
    """On CPU, outside torch.compile (whose own fusion handles the plain formulation, and which would
    unroll the chunk loop for each batch's number of rows)."""
    return hidden.device.type == "cpu" and not torch.compiler.is_compiling()
