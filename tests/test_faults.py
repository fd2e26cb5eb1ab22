"""Faults as runs meet them on shared clusters, injected for real into recipe subprocesses:
divergence, SIGTERM/SIGINT (one and two processes), a second run on the same output_dir, a Hub that
never answers, and bad values and files (damaged checkpoints and a full disk: ``test_checkpoint_faults.py``).

Every case ends in one documented exit code and one line on stderr, never a traceback, and never
leaves non-finite weights or a lost checkpoint behind.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nlp_ssl.training import checkpointing as ckpt
from tests.fault_runs import args, same_weights, status, tensors_in, write_corpus
from tests.helpers import ROOT, assert_one_line_exit, run_recipe, silent_endpoint, toy_texts, write_jsonl

pytestmark = pytest.mark.slow

DDP = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
       "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("faults"))


def start(cmd_args: list[str], launcher: list[str] | None = None) -> subprocess.Popen:
    cmd = (launcher or [sys.executable]) + [str(ROOT / "recipes" / "pretrain_mlm.py"), *cmd_args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)


def wait_for_line(child: subprocess.Popen, pattern: str, seen: list[str], timeout: float = 300) -> re.Match:
    """Read the child's output until a line matches ``pattern`` (lines are kept in ``seen``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = child.stdout.readline()
        if not line:
            raise AssertionError("run ended before the expected line: " + "".join(seen[-30:]))
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    raise AssertionError(f"no line matching {pattern!r} within {timeout}s")


def finish(child: subprocess.Popen, seen: list[str], timeout: float = 300) -> str:
    out, _ = child.communicate(timeout=timeout)
    seen.append(out)
    return "".join(seen)


# ----------------------------------------------------------------------------------- divergence


def test_divergence_skips_bad_steps_then_stops_and_leaves_no_non_finite_tensor(tmp_path, corpus):
    out = tmp_path / "run"
    proc = run_recipe("pretrain_mlm.py", *args(corpus, out, "optim.learning_rate=1e3", "train.max_steps=60", "save.every=5",
                                               "eval.every=5", "train.max_bad_steps=5"))
    assert_one_line_exit(proc, 3, r"^stopped: training diverged: steps \d+-\d+ had a non-finite loss")
    assert "update skipped (1 in a row, train.max_bad_steps=5)" in proc.stderr
    assert not (out / "all_results.json").exists(), "a diverged run must not look finished"
    assert status(out)["status"] == "diverged" and status(out)["exit_code"] == 3
    tensors = tensors_in(out)
    assert any("optimizer.bin" in k for k in tensors) or not list(out.rglob("step_*")), "checkpoint state not scanned"
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    assert not bad, f"non-finite tensors left in output_dir: {bad[:5]}"
    # The best-model tracker never takes a NaN evaluation as "best".
    if (out / "best_model").exists():
        state = json.loads(max((out / "checkpoints").glob("step_*/trainer_state.json")).read_text())
        assert state["best_metric"] == state["best_metric"]


# ----------------------------------------------------------------------------------- preemption


SIGNAL_RUN = ["train.max_steps=30", "save.every=100", "eval.every=1", "data.max_train_documents=60"]


@pytest.fixture(scope="module")
def straight_signal_run(tmp_path_factory, corpus) -> Path:
    """The uninterrupted run both signals' resumed runs must equal (one run, shared)."""
    straight = tmp_path_factory.mktemp("signals") / "straight"
    proc = run_recipe("pretrain_mlm.py", *args(corpus, straight, *SIGNAL_RUN))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return straight


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_resume_gives_identical_weights(tmp_path, corpus, straight_signal_run, sig):
    run, straight = SIGNAL_RUN, straight_signal_run
    stopped = tmp_path / "stopped"
    child, seen = start(args(corpus, stopped, *run)), []
    target = random.Random(sig).randint(3, 20)
    wait_for_line(child, rf"step {target}: eval_loss", seen)
    child.send_signal(sig)
    log = finish(child, seen)
    assert child.returncode == 75, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    m = re.search(rf"stopped: {sig.name} at step (\d+): checkpoint (\S+) saved; continue with resume=auto", log)
    assert m, log[-2000:]
    step = int(m.group(1))
    assert target <= step < 30
    saved = ckpt.checkpoint_dir(stopped / "checkpoints", step)
    ckpt.verify_checkpoint(saved)
    assert not (stopped / "all_results.json").exists()
    assert status(stopped) | {"time": None} == {"status": "preempted", "exit_code": 75, "step": step,
                                                "message": m.group(0)[len("stopped: "):], "time": None}

    proc = run_recipe("pretrain_mlm.py", *args(corpus, stopped, *run, "resume=auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"at step {step}" in proc.stderr
    same_weights(straight, stopped)
    assert status(stopped)["status"] == "finished"


def test_sigterm_stops_both_ddp_processes_at_one_step_and_resume_is_exact(tmp_path, corpus):
    run = ["train.max_steps=24", "save.every=100", "eval.every=1", "train.global_batch_size=16", "data.max_train_documents=80"]
    straight = tmp_path / "straight"
    proc = run_recipe("pretrain_mlm.py", *args(corpus, straight, *run),
                      launcher=[*DDP, "--main_process_port", "29541"])
    assert proc.returncode == 0, proc.stderr[-3000:]

    stopped = tmp_path / "stopped"
    child, seen = start(args(corpus, stopped, *run), launcher=[*DDP, "--main_process_port", "29542"]), []
    wait_for_line(child, r"step 6: eval_loss", seen)
    os.killpg(child.pid, signal.SIGTERM)  # as a scheduler does: every process of the job
    log = finish(child, seen)
    assert child.returncode != 0
    stops = re.findall(r"stopped: (?:SIGTERM|stop signal) at step (\d+): checkpoint", log)
    assert len(stops) == 2 and len(set(stops)) == 1, log[-3000:]  # both ranks, the same step
    step = int(stops[0])
    ckpt.verify_checkpoint(ckpt.checkpoint_dir(stopped / "checkpoints", step))

    proc = run_recipe("pretrain_mlm.py", *args(corpus, stopped, *run, "resume=auto"),
                      launcher=[*DDP, "--main_process_port", "29543"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    same_weights(straight, stopped)


# ----------------------------------------------------------------------------------- one run per folder


def test_second_run_on_the_same_output_dir_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path, corpus):
    out = tmp_path / "run"
    run = ["train.max_steps=100000", "save.every=10", "eval.every=1"]
    first, seen = start(args(corpus, out, *run)), []
    try:
        wait_for_line(first, r"step 2: eval_loss", seen)
        second = run_recipe("pretrain_mlm.py", *args(corpus, out, *run), timeout=120)
        assert_one_line_exit(second, 2,
                             rf"^error: output_dir {re.escape(str(out))} is in use by another run \(pid {first.pid} on ")
        again = run_recipe("pretrain_mlm.py", *args(corpus, out, *run, "resume=auto"), timeout=120)
        assert_one_line_exit(again, 2, r"is in use by another run")
        wait_for_line(first, r"step 12: eval_loss", seen)  # the first run trains on, and saved step 10
    finally:
        first.kill()  # SIGKILL: no chance to release the lock
        first.wait()
    assert first.poll() == -signal.SIGKILL
    saved = ckpt.list_checkpoints(out / "checkpoints")  # step 10, or later if the kill came late
    newest = int(saved[-1].name.split("_")[-1]) if saved else 0
    assert (out / ".lock").exists() and newest >= 10
    proc = run_recipe("pretrain_mlm.py", *args(corpus, out, f"train.max_steps={newest + 4}", "save.every=10", "resume=auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"at step {newest}:" in proc.stderr or f"at step {newest} " in proc.stderr, proc.stderr[-2000:]
    assert json.loads((out / "all_results.json").read_text())["steps"] == newest + 4


# ----------------------------------------------------------------------------------- Hub


def test_a_hub_that_never_answers_fails_within_a_bounded_time(tmp_path, corpus):
    began = time.monotonic()
    with silent_endpoint() as (endpoint, accepted):
        proc = run_recipe(
            "pretrain_mlm.py", *args(corpus, tmp_path / "run", "train.max_steps=4", "hub.push=true",
                                     "hub.model_id=someone/silent", "hub.timeout=1", "hub.retries=1"),
            env={"HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_dummy_token_for_tests", "HF_HUB_OFFLINE": "0"}, timeout=240,
        )
    elapsed = time.monotonic() - began
    assert accepted, "the run never reached the server"
    assert_one_line_exit(proc, 2, r"^error: push to hub: create repo someone/silent failed .*[Tt]imeout")
    assert "retrying in 2.0s (1/1)" in proc.stderr  # the timed-out request was retried, as network errors are
    assert elapsed < 60
    assert "hf_dummy_token_for_tests" not in proc.stderr + proc.stdout


# ----------------------------------------------------------------------------------- bad values and files


BAD_VALUES = {
    "train.max_steps=0": "train.max_steps must be > 0, got 0",
    "train.max_steps=-5": "train.max_steps must be > 0, got -5",
    "train.global_batch_size=0": "train.global_batch_size must be > 0, got 0",
    "impl.micro_batch_size=0": "impl.micro_batch_size must be > 0, got 0",
    "save.every=0": "save.every must be > 0, got 0",
    "eval.every=0": "eval.every must be > 0, got 0",
    "optim.learning_rate=-1": "optim.learning_rate must be > 0, got -1.0",
    "mlm.mlm_probability=1.5": "mlm.mlm_probability must be in (0, 1), got 1.5",
    "hub.retries=-1": "hub.retries must be >= 0, got -1",
}


@pytest.mark.parametrize("override", list(BAD_VALUES))
def test_bad_value_gets_one_line_and_exit_2(tmp_path, corpus, override):
    out = tmp_path / "run"
    proc = run_recipe("pretrain_mlm.py", *args(corpus, out, "train.max_steps=4", override))
    assert_one_line_exit(proc, 2, rf"^error: {re.escape(BAD_VALUES[override])}$")
    assert not (out / "model.safetensors").exists()


def _bad_files(tmp: Path) -> dict[str, tuple[list[str], str]]:
    import pandas as pd

    ints = tmp / "ints.parquet"
    pd.DataFrame({"text": list(range(100))}).to_parquet(ints)
    one = tmp / "one.txt"
    one.write_text("a single line of text\n", encoding="utf-8")
    short = write_jsonl(tmp / "short.jsonl", [{"text": t} for t in toy_texts(30)])
    return {
        "integer text column": ([f"data.train_file={ints}"],
                                rf"data.train_file {ints}: field 'text' holds int64 values, not text"),
        "integer text column, streamed": ([f"data.train_file={ints}", "data.streaming=true"],
                                          r"field 'text' holds int64 values, not text"),
        "one-line txt file": ([f"data.train_file={one}"], rf"data.train_file {one}: 1 document\(s\) are too few to hold out"),
        "stream shorter than the hold-out": (
            [f"data.train_file={short}", "data.streaming=true", "data.streaming_validation_documents=50"],
            r"the stream has 30 document\(s\), not more than the data.streaming_validation_documents=50 held out",
        ),
    }


@pytest.mark.parametrize("case", ["integer text column", "integer text column, streamed", "one-line txt file",
                                  "stream shorter than the hold-out"])
def test_bad_file_gets_one_line_and_exit_2(tmp_path, corpus, case):
    extra, says = _bad_files(tmp_path)[case]
    proc = run_recipe("pretrain_mlm.py", *args(corpus, tmp_path / "run", "train.max_steps=4"), *extra)
    assert_one_line_exit(proc, 2, rf"^error: .*{says}")
