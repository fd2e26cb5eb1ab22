"""Several machines, played on this one over the loopback address, one process each, gloo on CPU:
the SLURM script ``recipes/configs/accelerate/slurm_multi_node.sh`` under a fake ``srun``/``scontrol``
(each "machine" a task with its own SLURM_NODEID), launcher pairs of ``accelerate launch --config_file
multi_node.yaml --machine_rank 0|1``, and ``torchrun --nnodes 2``.

Two machines train as one machine with two processes does; SIGTERM stops both at one step, the script
requeues the job and the requeued job resumes exactly; a start that fails ends both launchers at once with
one line from each machine; the machine that waits while the other prepares the data waits
``prepare_timeout``, not the backend's timeout.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlp_ssl.training import checkpointing as ckpt
from tests.helpers import ROOT, toy_texts, write_jsonl

pytestmark = pytest.mark.slow

RECIPE = str(ROOT / "recipes" / "pretrain_mlm.py")
ACCELERATE_CONFIGS = ROOT / "recipes" / "configs" / "accelerate"
SLURM_SCRIPT = ACCELERATE_CONFIGS / "slurm_multi_node.sh"
SMALL = [
    "data.block_size=64", "train.global_batch_size=16", "train.max_steps=10", "eval.every=2", "eval.batches=1",
    "tokenizer.vocab_size=2000", "log.progress_bar=false", "data.validation_split=0.1", "log.report_to=[]",
    "save.every=100", "optim.lr_schedule=constant", "optim.warmup_ratio=0",
]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
#: A wait much shorter than the preparation of the corpus below from a cold cache (its tokenizer is
#: trained, its text tokenized and packed): the wait the first run's second machine reports is checked
#: against it, so that the test of a too short prepare_timeout stands on a measured fact.
SHORT_WAIT = 0.5
#: Launchers that end within this bound did not wait at a rendezvous or in a collective (their timeouts
#: are 600 s and more).
BOUNDED = 240


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The corpus, and beside it the data cache every run of the module shares (its tokenizer is trained
    once: training one is not deterministic, huggingface/tokenizers#1794)."""
    return write_jsonl(tmp_path_factory.mktemp("multi_node") / "train.jsonl", [{"text": t} for t in toy_texts(5000)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.train_file={corpus}", f"output_dir={out}", f"data.cache_dir={corpus.parent / 'cache'}", *SMALL, *extra]


class Pair:
    """Two launchers, machine ranks 0 and 1, each in its own session, logging to its own file."""

    def __init__(self, logs: Path, args: list[str], launcher: str = "accelerate", launch_args: tuple = ()):
        port, self.logs, self.began = free_port(), [logs / "machine0.log", logs / "machine1.log"], time.monotonic()
        logs.mkdir(parents=True, exist_ok=True)
        self.procs = []
        for rank, log in enumerate(self.logs):
            if launcher == "accelerate":
                cmd = [*ACCELERATE, "--config_file", str(ACCELERATE_CONFIGS / "multi_node.yaml"), "--num_processes", "2",
                       "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                       "--main_process_port", str(port), *launch_args, RECIPE, *args]
            else:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                       "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
                       *launch_args, RECIPE, *args]
            with open(log, "w") as out:
                self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True))

    def wait(self, timeout: float = 420) -> list[int]:
        try:
            return [p.wait(timeout=max(1.0, self.began + timeout - time.monotonic())) for p in self.procs]
        finally:
            for p in self.procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()

    def text(self, rank: int) -> str:
        return self.logs[rank].read_text(errors="replace")

    def wait_for(self, rank: int, pattern: str, timeout: float = 300) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.text(rank)):
                return m
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.2)
        self.wait(timeout=1)
        raise AssertionError(f"no {pattern!r} from machine {rank}: {self.text(rank)[-3000:]}")

    def terminate(self) -> None:
        """SIGTERM to every process of both machines, as a scheduler ends a job."""
        for p in self.procs:
            os.killpg(p.pid, signal.SIGTERM)


FAKE_SRUN = """#!/bin/bash
# srun of a fake job: its command once per machine, with that machine's SLURM_NODEID, logging to node<i>.log.
while [[ $1 == -* ]]; do shift; done
trap 'true' TERM  # as srun: a SIGTERM goes to the tasks, and srun waits for them
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 "$@" > "$FAKE_SLURM/node$node.log" 2>&1 &
    pids+=($!)
done
code=0
for pid in "${pids[@]}"; do
    while true; do wait "$pid"; c=$?; kill -0 "$pid" 2>/dev/null || break; done
    (( c > code )) && code=$c
done
exit $code
"""
FAKE_SCONTROL = """#!/bin/bash
case $1 in
    show) printf '127.0.0.1\\n127.0.0.1\\n' ;;
    requeue) echo "requeue $2" >> "$FAKE_SLURM/scontrol.log" ;;
    *) exit 1 ;;
esac
"""


class SlurmJob(Pair):
    """``slurm_multi_node.sh`` as ``sbatch --nodes=2`` would run it (one GPU's worth of processes per node),
    under a fake srun and scontrol; node<i>.log is machine i's output."""

    def __init__(self, folder: Path, args: list[str], restart: int = 0):
        folder.mkdir(parents=True, exist_ok=True)
        bin_dir = folder / "bin"
        bin_dir.mkdir(exist_ok=True)
        for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        self.folder, self.began = folder, time.monotonic()
        self.logs = [folder / "node0.log", folder / "node1.log"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SLURM": str(folder),
               "SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "fake[1-2]", "SLURM_GPUS_ON_NODE": "1",
               "SLURM_RESTART_COUNT": str(restart), "NLP_SSL_ACCELERATE": " ".join(ACCELERATE)}
        with open(folder / "job.log", "w") as out:
            self.procs = [subprocess.Popen(["bash", str(SLURM_SCRIPT), RECIPE, *args], stdout=out, stderr=subprocess.STDOUT,
                                           cwd=ROOT, env=env, start_new_session=True)]

    def text(self, rank: int) -> str:
        path = self.logs[rank]
        return path.read_text(errors="replace") if path.exists() else ""

    def job_text(self) -> str:
        return (self.folder / "job.log").read_text(errors="replace")

    def requeued(self) -> list[str]:
        log = self.folder / "scontrol.log"
        return log.read_text().splitlines() if log.exists() else []


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def one_line_errors(log: str) -> list[str]:
    return re.findall(r"^(?:error|stopped): .*$", log, re.M)


def worker_traceback(log: str) -> bool:
    """A traceback from the recipe's process, not the launcher's report of its exit code."""
    return bool(re.search(r"^\[rank\d+\]:|File \".*recipes/pretrain_mlm\.py\"|Connection closed by peer|Gloo", log, re.M))


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory, corpus) -> Path:
    """The reference: a 2-machine SLURM job, straight through, the first run of the module (it prepares the
    data from a cold cache while the second machine waits)."""
    out = tmp_path_factory.mktemp("pair") / "straight"
    job = SlurmJob(out.parent / "job", run_args(corpus, out))
    assert job.wait() == [0], job.job_text() + job.text(0)[-3000:] + job.text(1)[-3000:]
    assert job.requeued() == [] and "run status 'finished'" in job.job_text()
    waited = re.search(r"waited ([\d.]+) s for the main process to prepare the data", job.text(1))
    assert waited, job.text(1)[-3000:]
    out.with_name("waited").write_text(waited.group(1))
    return out


def test_two_machines_train_as_one_machine_with_two_processes(tmp_path, corpus, pair_run):
    one = tmp_path / "one_machine"
    ddp = [*ACCELERATE, "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port())]
    proc = subprocess.run([*ddp, RECIPE, *run_args(corpus, one)], capture_output=True, text=True, timeout=420, cwd=ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = weights(one), weights(pair_run)
    assert a.keys() == b.keys()
    # Same data, order and batches; only the CPU threads per process differ (2 on a machine of its own,
    # 1 beside a second process), which moves the last bits of the matmuls.
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    log = (pair_run.parent / "job" / "node0.log").read_text()
    assert "micro-batch 8 × 1 accumulation × 2 process(es) = 16" in log


def test_sigterm_stops_both_machines_at_one_step_and_the_requeued_job_resumes_exactly(tmp_path, corpus, pair_run):
    out = tmp_path / "stopped"
    args = run_args(corpus, out)
    job = SlurmJob(tmp_path / "job", args)
    job.wait_for(0, r"step 4: eval_loss")
    job.terminate()  # SLURM's --signal=TERM: every process of the job
    assert job.wait(timeout=300) != [0]
    stops = [re.findall(r"stopped: (?:SIGTERM|stop signal) at step (\d+): checkpoint", job.text(r)) for r in (0, 1)]
    assert [len(s) for s in stops] == [1, 1] and stops[0] == stops[1], job.text(0)[-3000:] + job.text(1)[-3000:]
    step = int(stops[0][0])
    assert 4 <= step < 10
    ckpt.verify_checkpoint(ckpt.checkpoint_dir(out / "checkpoints", step))
    assert "run status 'preempted'" in job.job_text() and job.requeued() == ["requeue 4242"], job.job_text()

    requeued = SlurmJob(tmp_path / "job_restart", args, restart=1)  # SLURM runs the same script again
    assert requeued.wait() == [0], requeued.job_text() + requeued.text(0)[-3000:]
    assert f"at step {step} " in requeued.text(0) and requeued.requeued() == []
    a, b = weights(out), weights(pair_run)
    assert all(torch.equal(a[k], b[k]) for k in a), "resume on two machines is not exact"


def test_torchrun_pair_gives_the_accelerate_pair_weights(tmp_path, corpus, pair_run):
    out = tmp_path / "torchrun"
    pair = Pair(tmp_path / "logs", run_args(corpus, out), launcher="torchrun")
    assert pair.wait() == [0, 0], pair.text(0)[-3000:] + pair.text(1)[-3000:]
    a, b = weights(out), weights(pair_run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_bad_batch_setting_ends_both_machines_at_once_even_with_restarts(tmp_path, corpus):
    out = tmp_path / "bad_batch"
    # Each restart meets the same setting: the pair must fail every attempt in step and end, not leave a
    # machine waiting for a partner that has gone.
    pair = Pair(tmp_path / "logs", run_args(corpus, out, "train.global_batch_size=7"), launch_args=("--max_restarts", "1"))
    codes = pair.wait(timeout=BOUNDED)
    expected = ("error: train.global_batch_size 7 cannot be split evenly over 2 processes (impl.micro_batch_size auto): "
                "use a multiple of 2, or set impl.micro_batch_size")
    for rank in (0, 1):
        log = pair.text(rank)
        assert codes[rank] != 0, log[-3000:]
        assert set(one_line_errors(log)) == {expected}, log[-3000:]
        assert len(one_line_errors(log)) == 2  # the first attempt and its restart
        assert not worker_traceback(log), log[-3000:]


def test_a_bad_data_file_ends_both_machines_with_its_line(tmp_path, corpus):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 42}\n' + corpus.read_text())
    out = tmp_path / "bad_data"
    pair = Pair(tmp_path / "logs", [*run_args(corpus, out), f"data.train_file={bad}"])
    codes = pair.wait(timeout=BOUNDED)
    # The main machine reads the file first; the other learns of its failure instead of waiting for it.
    lines = [one_line_errors(pair.text(rank)) for rank in (0, 1)]
    assert codes[0] != 0 and codes[1] != 0, pair.text(0)[-3000:] + pair.text(1)[-3000:]
    assert len(lines[0]) == 1 and lines[0] == lines[1], lines
    assert re.match(rf"error: data\.train_file {re.escape(str(bad))} line 1: ", lines[0][0]), lines
    assert not worker_traceback(pair.text(0) + pair.text(1)), pair.text(1)[-3000:]


def test_a_prepare_timeout_shorter_than_the_preparation_ends_both_machines_naming_it(tmp_path, corpus, pair_run):
    # The reference run's second machine waited longer than SHORT_WAIT for the same preparation, and still
    # started (prepare_timeout at its default).
    assert float(pair_run.with_name("waited").read_text()) > SHORT_WAIT
    out = tmp_path / "short"
    cold = f"data.cache_dir={tmp_path / 'cache'}"  # as cold as the reference run's
    pair = Pair(tmp_path / "logs", run_args(corpus, out, f"impl.prepare_timeout={SHORT_WAIT:g}", cold))
    codes = pair.wait(timeout=BOUNDED)
    assert codes[0] != 0 and codes[1] != 0
    waiting, preparing = one_line_errors(pair.text(1)), one_line_errors(pair.text(0))
    assert waiting == [f"error: process 1 waited impl.prepare_timeout={SHORT_WAIT:g} seconds for the data to be prepared, "
                       "and it was not: raise impl.prepare_timeout, or prepare the corpus once beforehand (nlp-ssl prepare, "
                       "then data.prepared=<dir>)"], pair.text(1)[-3000:]
    assert len(preparing) == 1 and f"impl.prepare_timeout={SHORT_WAIT:g} " in preparing[0], pair.text(0)[-3000:]
    assert not worker_traceback(pair.text(0) + pair.text(1))


# ----------------------------------------------------------------------------------- the SLURM script alone


def slurm_function(call: str, **env: str) -> subprocess.CompletedProcess:
    """``call`` in a bash that sourced the script (which then runs nothing), with only ``env`` set."""
    return subprocess.run(["bash", "-c", f'source "{SLURM_SCRIPT}" && {call}'], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": os.environ["PATH"], **env}, timeout=60)


@pytest.mark.parametrize("gpus", [{"SLURM_GPUS_ON_NODE": "8"}, {"SLURM_GPUS_PER_NODE": "h100:8"}])
def test_the_slurm_script_builds_each_nodes_launch_command_from_slurms_variables(gpus):
    job = {"SLURM_NNODES": "4", "MASTER_ADDR": "node017", "MASTER_PORT": "40123", **gpus}
    for node in range(4):
        proc = slurm_function("nlp_ssl_launch_command recipes/pretrain_mlm.py output_dir=/shared/run 'a b=c d'",
                              SLURM_NODEID=str(node), **job)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [
            "accelerate", "launch", "--config_file", "recipes/configs/accelerate/multi_node.yaml", "--num_machines", "4",
            "--machine_rank", str(node), "--num_processes", "32", "--main_process_ip", "node017", "--main_process_port",
            "40123", "recipes/pretrain_mlm.py", "output_dir=/shared/run", "a b=c d", "resume=auto"]


def test_the_slurm_script_refuses_what_it_cannot_tell_in_one_line():
    proc = slurm_function("nlp_ssl_launch_command x.py", SLURM_NNODES="2", SLURM_NODEID="0", MASTER_ADDR="n", MASTER_PORT="1")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "nlp_ssl: cannot tell the GPUs per machine from SLURM_GPUS_ON_NODE/SLURM_GPUS_PER_NODE ('')"
    proc = slurm_function("nlp_ssl_job recipes/pretrain_mlm.py seed=1", SLURM_NNODES="2", SLURM_JOB_ID="7")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("nlp_ssl: pass output_dir=<a folder every machine shares> (the requeue reads its "
                                   "run_status.json)")


def test_the_multi_node_doc_shows_the_slurm_script_as_it_is():
    doc = (ROOT / "docs" / "multi_node.md").read_text()
    assert f"```bash\n{SLURM_SCRIPT.read_text()}```\n" in doc
