"""Faults as runs meet them on shared clusters, injected for real into recipe subprocesses:
divergence, SIGTERM/SIGINT (one and two processes), a second run on the same output_dir, damaged
checkpoints, a full disk, a Hub that never answers, and bad values and files.

Every case ends in one documented exit code and one line on stderr, never a traceback, and never
leaves non-finite weights or a lost checkpoint behind.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlp_ssl import checkpointing as ckpt
from tests.helpers import ROOT, run_recipe, toy_texts, write_jsonl

pytestmark = pytest.mark.slow

SMALL = [
    "data.block_size=64", "impl.micro_batch_size=8", "train.global_batch_size=8", "log.every=1", "eval.every=100",
    "tokenizer.vocab_size=2000", "log.progress_bar=false", "data.validation_split=0.1", "log.report_to=[]",
]
#: A constant schedule: a run extended from max_steps 10 to 12 then equals a straight 12-step run.
CONSTANT = ["optim.lr_schedule=constant", "optim.warmup_ratio=0", "save.every=4", "save.total_limit=3"]
DDP = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
       "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("faults") / "train.jsonl", [{"text": t} for t in toy_texts(400)])


def args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.train_file={corpus}", f"output_dir={out}", *SMALL, *extra]


def last_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_one_line_exit(proc, code: int, pattern: str) -> None:
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(pattern, last_line(proc)), last_line(proc)


def tensors_in(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor saved under ``folder``: safetensors files and torch pickles (optimizer state)."""
    found = {}
    for path in folder.rglob("*.safetensors"):
        found.update({f"{path}:{k}": v for k, v in load_file(str(path)).items()})
    for path in folder.rglob("*.bin"):
        state = torch.load(path, map_location="cpu", weights_only=False)
        stack = [(str(path), state)]
        while stack:
            name, value = stack.pop()
            if isinstance(value, torch.Tensor):
                found[name] = value
            elif isinstance(value, dict):
                stack.extend((f"{name}:{k}", v) for k, v in value.items())
            elif isinstance(value, (list, tuple)):
                stack.extend((f"{name}:{i}", v) for i, v in enumerate(value))
    return found


def status(out: Path) -> dict:
    return json.loads((out / "run_status.json").read_text())


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


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


# ----------------------------------------------------------------------------------- damaged checkpoints


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, corpus) -> tuple[Path, Path]:
    """(a 12-step straight run, a run that stopped at step 10 with checkpoints at steps 4 and 8)."""
    root = tmp_path_factory.mktemp("damaged")
    straight, partial = root / "straight", root / "partial"
    for out, steps in ((straight, 12), (partial, 10)):
        proc = run_recipe("pretrain_mlm.py", *args(corpus, out, *CONSTANT, f"train.max_steps={steps}"))
        assert proc.returncode == 0, proc.stderr[-3000:]
    (partial / "all_results.json").unlink()  # as if it had been killed during its final save
    assert [p.name for p in ckpt.list_checkpoints(partial / "checkpoints")] == ["step_00000004", "step_00000008"]
    return straight, partial


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "truncated model.safetensors": ("model.safetensors", truncate, "has \\d+ bytes, expected \\d+"),
    "truncated optimizer.bin": ("optimizer.bin", truncate, "has \\d+ bytes, expected \\d+"),
    "truncated trainer_state.json": ("trainer_state.json", truncate, "has \\d+ bytes, expected \\d+"),
    "deleted model.safetensors": ("model.safetensors", Path.unlink, "is missing"),
    "flipped byte in the HF export": ("hf_model/model.safetensors",
                                      lambda p: p.write_bytes(bytes([p.read_bytes()[0] ^ 1]) + p.read_bytes()[1:]),
                                      "does not match its checksum"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_newest_checkpoint(tmp_path, corpus, interrupted_run, case):
    straight, partial = interrupted_run
    out = tmp_path / "run"
    shutil.copytree(partial, out)
    name, damage, says = DAMAGE[case]
    newest = out / "checkpoints" / "step_00000008"
    damage(newest / name)

    explicit = run_recipe("pretrain_mlm.py", *args(corpus, out, *CONSTANT, "train.max_steps=12", f"resume={newest}"))
    assert_one_line_exit(explicit, 2, rf"^error: checkpoint {re.escape(str(newest))} is damaged: {re.escape(name)} {says}$")

    proc = run_recipe("pretrain_mlm.py", *args(corpus, out, *CONSTANT, "train.max_steps=12", "resume=auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(rf"skipping checkpoint {re.escape(str(newest))} is damaged: {re.escape(name)}", proc.stderr)
    assert "resumed from" in proc.stderr and "step_00000004 at step 4" in proc.stderr
    same_weights(straight, out)  # exact resume from the older checkpoint


def test_resume_auto_on_a_finished_run_says_so_and_does_not_retrain(tmp_path, corpus, interrupted_run):
    straight, _ = interrupted_run
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    before = (out / "all_results.json").read_bytes(), (out / "model.safetensors").stat().st_mtime_ns
    proc = run_recipe("pretrain_mlm.py", *args(corpus, out, *CONSTANT, "train.max_steps=12", "resume=auto"))
    assert_one_line_exit(proc, 0, rf"^output_dir {re.escape(str(out))} holds a finished run \(12 steps")
    assert ((out / "all_results.json").read_bytes(), (out / "model.safetensors").stat().st_mtime_ns) == before
    # all_results.json is written last: nothing of the final outputs is newer.
    final = [p for p in out.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "run_status.json"]
    assert max(final, key=lambda p: p.stat().st_mtime_ns).name == "all_results.json"
    # Files take the user's umask (safetensors alone would write them 0600).
    mode = 0o666 & ~_umask()
    assert {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()} == {oct(mode)}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------------- full disk


def test_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tmp_path, corpus, interrupted_run):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -rm (a private mount namespace) to mount a small tmpfs")
    _, partial = interrupted_run
    one = sum(p.stat().st_size for p in (partial / "checkpoints" / "step_00000004").rglob("*") if p.is_file())
    model = (partial / "model.safetensors").stat().st_size
    # Room for the first checkpoint and the best model, not for the second checkpoint.
    size_kb = (one + 2 * model + 512 * 1024) // 1024
    out = tmp_path / "disk"
    out.mkdir()
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain_mlm.py"),
           *args(corpus, out, *CONSTANT, "train.max_steps=12", "eval.every=4", "save.total_limit=5")]
    after = tmp_path / "after"  # the tmpfs lives only in the run's namespace: copy out what it left
    script = (f"mount -t tmpfs -o size={size_kb}k tmpfs {out} && cd {ROOT} && " + " ".join(map(_quote, cmd))
              + f"; code=$?; cp -a {out} {after}; exit $code")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert_one_line_exit(
        proc, 74,
        r"^stopped: no space left on device while saving checkpoint step 8 to \S+ \(checkpoint step_00000004 is intact\); "
        r"free space, then continue with resume=auto$",
    )
    assert [p.name for p in (after / "checkpoints").iterdir()] == ["step_00000004"], "partial checkpoint left behind"
    ckpt.verify_checkpoint(after / "checkpoints" / "step_00000004")
    assert status(after)["status"] == "write_failed" and status(after)["exit_code"] == 74


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# ----------------------------------------------------------------------------------- Hub


def test_a_hub_that_never_answers_fails_within_a_bounded_time(tmp_path, corpus):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept_and_stay_silent():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    began = time.monotonic()
    try:
        proc = run_recipe(
            "pretrain_mlm.py", *args(corpus, tmp_path / "run", "train.max_steps=4", "hub.push=true",
                                     "hub.model_id=someone/silent", "hub.timeout=1", "hub.retries=1"),
            env={"HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_dummy_token_for_tests", "HF_HUB_OFFLINE": "0"}, timeout=240,
        )
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()
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
