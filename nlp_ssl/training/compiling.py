"""``compile=true``: the task compiled before the clock starts, and kernels that a resume repeats bit for bit."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time

import torch

from nlp_ssl.training.loaders import is_iterable

logger = logging.getLogger("nlp_ssl.trainer")


@contextlib.contextmanager
def deterministic_kernels():
    """Compiled kernels without atomic adds: inductor otherwise accumulates scatters (an embedding's
    gradient) with atomic adds from parallel threads, in an order that changes from run to run, and
    a resumed run could not repeat an uninterrupted one. Eager ops only warn where they have no
    deterministic version; uninitialised memory is not filled (no cost)."""
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def first_examples(dataset, count: int) -> list:
    """The first ``count`` examples of the data as stored (not as shuffled)."""
    if is_iterable(dataset):
        return list(itertools.islice(iter(dataset), count))
    return [dataset[i] for i in range(min(count, len(dataset)))]


def compile_on_a_fixed_batch(accelerator, model, optimizer, dataset, collator, size: int) -> None:
    """Compile now, before the clock of the training loop starts (tokens/s and ``time_budget`` see
    no compile time), on the first examples of the data as stored, with the RNG and gradients left
    as they were. ``dynamic=True`` lets every later batch use these kernels, whatever its sizes
    (a sparse MLM head's change every batch), so no recompile happens mid-run. And a resumed run
    compiles on the same batch as an uninterrupted one: inductor sizes some kernels from the
    first shapes it sees (Triton's split reductions), which could otherwise change the last bits
    of the weights after a resume. (On CPU that did not happen for BERT; tested: only the atomic
    adds did, see :func:`deterministic_kernels`.)"""
    examples = first_examples(dataset, size)
    if not examples:
        return
    acc = accelerator
    batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in collator(examples).items()}
    devices = [acc.device] if acc.device.type == "cuda" else []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=devices, device_type=acc.device.type):
        model.train()
        out = model(**batch)
        sum(loss for loss, _ in out["losses"].values()).backward()
    optimizer.zero_grad(set_to_none=True)
    if acc.is_local_main_process:
        logger.info("compiled the task in %.0f s", time.perf_counter() - start)
