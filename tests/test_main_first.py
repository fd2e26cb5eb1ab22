"""``RunAccelerator.main_process_first`` on 2 "machines" × 2 processes (four gloo processes here, the
launcher's LOCAL_WORLD_SIZE=2 making two machines of them): who goes first, that a preparation slower than
the training backend's timeout does not end the run, that a failure in the block reaches every process as
one line. The wait's bound, ``prepare_timeout``, is tested on a launcher pair in ``tests/test_multi_node.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
import traceback
from datetime import timedelta

import pytest

pytestmark = pytest.mark.slow

WORLD, PER_MACHINE = 4, 2
#: How long the process that goes first stays in the block: the others' entry times are measured against it.
PREPARING_S = 1.0
#: The training backend's timeout while the data is prepared (NCCL's ten minutes, scaled down): shorter
#: than the preparation, so a wait in the backend's barrier (plain Accelerate's) would end the run.
BACKEND_TIMEOUT_S = PREPARING_S / 4


def _entered_and_left(accelerator, local_block: bool) -> tuple[float, float]:
    """When this process entered and left a main-first block (``local_main_process_first`` if ``local_block``)."""
    per_machine = local_block or accelerator.prepare_on == "each_machine"
    first = accelerator.is_local_main_process if per_machine else accelerator.is_main_process
    block = accelerator.local_main_process_first() if local_block else accelerator.main_process_first()
    with block:
        entered = time.monotonic()
        if first:
            time.sleep(PREPARING_S)
        left = time.monotonic()
    return entered, left


def _outcome(accelerator, fail_on: int, error: BaseException) -> str:
    try:
        with accelerator.main_process_first():
            if accelerator.process_index == fail_on:
                raise error
    except BaseException as raised:  # noqa: BLE001 - what each process would print is the point
        return f"{type(raised).__name__}: {raised}"
    return "went on"


def _process(rank: int, port: int, results) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank % PER_MACHINE), WORLD_SIZE=str(WORLD),
                      LOCAL_WORLD_SIZE=str(PER_MACHINE), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        import torch
        import torch.distributed as dist
        from torch.distributed.distributed_c10d import _set_pg_timeout

        from nlp_ssl.errors import DataError
        from nlp_ssl.training.main_first import RunAccelerator

        accelerator = RunAccelerator(cpu=True, prepare_timeout=30, prepare_on="main")
        _set_pg_timeout(timedelta(seconds=BACKEND_TIMEOUT_S))
        found = {"main": _entered_and_left(accelerator, local_block=False)}
        found["machine"] = _entered_and_left(accelerator, local_block=True)
        accelerator.prepare_on = "each_machine"  # main_process_first as prepare_on=each_machine makes it
        found["each_machine"] = _entered_and_left(accelerator, local_block=False)
        _set_pg_timeout(timedelta(seconds=60))  # training starts: its first collective, on the backend's group
        total = torch.ones(1)
        dist.all_reduce(total)
        found["trained"] = total.item()
        found["machine fails"] = _outcome(accelerator, 2, DataError("data.train_file x.jsonl: no such file"))
        accelerator.prepare_on = "main"
        found["main fails"] = _outcome(accelerator, 0, DataError("data.train_file x.jsonl line 3: field 'text' missing"))
        found["other fails"] = _outcome(accelerator, 3, DataError("data.train_file x.jsonl line 9: not valid JSON"))
        found["bug"] = _outcome(accelerator, 0, KeyError("input_ids"))
        results.put((rank, found))
    except BaseException:  # noqa: BLE001
        results.put((rank, traceback.format_exc()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def found() -> dict[int, dict]:
    context = multiprocessing.get_context("spawn")
    results, port = context.Queue(), _free_port()
    processes = [context.Process(target=_process, args=(rank, port, results)) for rank in range(WORLD)]
    for p in processes:
        p.start()
    try:
        by_rank = dict(results.get(timeout=240) for _ in processes)
    finally:
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for rank, value in by_rank.items():
        assert isinstance(value, dict), f"process {rank}:\n{value}"
    return by_rank


def test_the_main_process_prepares_before_all_others(found):
    main_left = found[0]["main"][1]
    assert all(found[rank]["main"][0] >= main_left for rank in (1, 2, 3))


def test_a_preparation_slower_than_the_backends_timeout_still_starts_the_run(found):
    # Each block kept the others waiting PREPARING_S, four times the backend's timeout, and every process
    # went on to train together.
    for kind in ("main", "machine", "each_machine"):
        assert found[1][kind][0] - found[0][kind][0] >= PREPARING_S > 3 * BACKEND_TIMEOUT_S, kind
    assert [found[rank]["trained"] for rank in range(WORLD)] == [WORLD] * WORLD


def test_each_machine_prepares_on_its_first_process_without_waiting_for_the_other_machine(found):
    for kind in ("machine", "each_machine"):
        (entered0, left0), (entered2, left2) = found[0][kind], found[2][kind]
        assert found[1][kind][0] >= left0 and found[3][kind][0] >= left2  # each after its own machine's first
        assert entered2 < left0 and entered0 < left2  # the two machines' first processes at the same time


def test_a_failure_in_the_block_stops_every_process_with_its_line(found):
    line = "DataError: data.train_file x.jsonl line 3: field 'text' missing"
    assert [found[rank]["main fails"] for rank in range(WORLD)] == [line] * WORLD
    # A process that fails after the main one went on: the others learn it before they train.
    line = "DataError: data.train_file x.jsonl line 9: not valid JSON"
    assert [found[rank]["other fails"] for rank in range(WORLD)] == [line] * WORLD
    # Each machine preparing its own: the second machine's failure stops the first machine too.
    line = "DataError: data.train_file x.jsonl: no such file"
    assert [found[rank]["machine fails"] for rank in range(WORLD)] == [line] * WORLD


def test_a_bug_in_the_block_points_the_others_at_the_process_with_the_traceback(found):
    assert found[0]["bug"] == "KeyError: 'input_ids'"
    for rank in (1, 2, 3):
        assert found[rank]["bug"] == ("RunEnded: process 0 failed while preparing the data (KeyError: 'input_ids'); "
                                      "its log has the traceback")
