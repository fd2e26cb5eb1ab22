"""How fast a run trains: tokens per second and MFU (model FLOPs utilisation) per logging window.

MFU is the window's model FLOPs (:meth:`nlp_ssl.tasks.base.Task.flops`), over its time, over the
peak of every process: the peak comes from ``peak_flops``, a table of known GPUs, or a short matmul
probe of the hardware at hand.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import torch

#: Dense bf16/fp16 peak FLOP/s of common accelerators, for MFU; set ``peak_flops`` for others.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10G": 125e12, "L4": 121e12, "V100": 125e12, "4090": 165e12}


def peak_flops(configured: float | None, device: torch.device, mixed_precision: str) -> float:
    """The hardware peak FLOP/s for MFU: ``peak_flops``, the table for known GPUs, else measured."""
    if configured:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_FLOPS.items():
            if key in name:
                return value
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)
    return measured_peak_flops(str(device), dtype)


@functools.cache
def measured_peak_flops(device: str, dtype: torch.dtype, budget_s: float = 0.4) -> float:
    """The best FLOP/s of square matmuls in ``dtype`` on ``device`` within about ``budget_s`` (at most
    twice that), the size doubling while the next fits: the roofline of hardware that no table knows.
    Once per process; the inputs come from a private generator, so the run's RNG is untouched."""
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    best, size, largest, deadline = 0.0, 512, 8192 if cuda else 2048, time.perf_counter() + budget_s
    a = b = None
    while True:
        if a is None or a.shape[0] != size:
            a, b = (torch.rand(size, size, generator=generator).to(device, dtype) for _ in range(2))
            a @ b  # warm-up: first-call dispatch and allocation
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        took = time.perf_counter() - start
        best = max(best, 2 * size**3 / max(took, 1e-9))
        left = deadline - time.perf_counter()
        if left <= 0:
            return best
        if size < largest and 16 * took < left + budget_s:  # 8× the work, run twice (warm-up)
            size *= 2


@dataclass
class Window:
    """What the optimizer steps since the last train record did: their losses, tokens and FLOPs."""

    losses: list[torch.Tensor] = field(default_factory=list)
    tokens: int = 0
    flops: float = 0.0
    start: float = field(default_factory=time.perf_counter)


def train_record(accelerator, window: Window, peak: float, step: int, lr: float, epoch: int) -> tuple[dict, int]:
    """One train record over ``window`` (loss, lr, tokens/s and MFU, summed over every process), and
    the window's tokens over every process."""
    acc = accelerator
    elapsed = time.perf_counter() - window.start
    loss = acc.reduce(torch.stack(window.losses).mean(), "sum").item()
    counts = acc.reduce(torch.tensor([window.tokens, window.flops], device=acc.device, dtype=torch.float64), "sum").tolist()
    tokens_all, flops_all = int(counts[0]), counts[1]
    record = {"step": step, "train_loss": loss, "lr": lr, "tokens_per_s": tokens_all / max(elapsed, 1e-9), "epoch": epoch}
    if peak and flops_all:
        record["mfu"] = flops_all / max(elapsed, 1e-9) / (peak * acc.num_processes)
    return record, tokens_all


def progress(record: dict) -> dict[str, str]:
    """The progress bar's postfix for a train record."""
    mfu = {"mfu": f"{record['mfu']:.1%}"} if "mfu" in record else {}
    return {"loss": f"{record['train_loss']:.3f}", "lr": f"{record['lr']:.2e}", "tok_s": f"{record['tokens_per_s']:.0f}",
            **mfu}


def averages(history: list[dict]) -> dict:
    """tokens/s and MFU averaged over the train records, for the results."""
    train = [h for h in history if "train_loss" in h]
    mfu = [h["mfu"] for h in train if "mfu" in h]
    return {
        "train_tokens_per_s": (sum(h["tokens_per_s"] for h in train) / len(train)) if train else None,
        "train_mfu": (sum(mfu) / len(mfu)) if mfu else None,
    }
