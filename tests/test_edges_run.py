"""The edges of a run as a new user meets them, each in a recipe subprocess: where a run may write,
values that cannot be what the user meant, a resume that would change the run, a signal while the
run is still being set up, and what the run says when it ends.

A bad input ends in one line naming the key, value or path and exit 2, before any data is read
(the runs below name a data file that does not exist: reading it would be another error).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, assert_one_line_exit, toy_texts, write_jsonl

pytestmark = pytest.mark.slow

SMALL = [
    "data.block_size=64", "impl.micro_batch_size=8", "train.global_batch_size=8", "log.every=1", "eval.every=100",
    "tokenizer.vocab_size=2000", "log.progress_bar=false", "data.validation_split=0.1", "log.report_to=[]",
]
NO_DATA = "data.train_file=/nonexistent/train.jsonl"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("edges") / "train.jsonl", [{"text": t} for t in toy_texts(200)])


def recipe(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain_mlm.py"), *SMALL, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})


def status(out: Path) -> dict:
    return json.loads((out / "run_status.json").read_text())


# ----------------------------------------------------------------------------------- where a run writes


def _place(tmp: Path, case: str) -> tuple[str, str]:
    """(output_dir, what the error says) for each kind of place a run must not write to."""
    notes, project, root = tmp / "notes.txt", tmp / "project", re.escape(str(tmp))
    if case == "a file":
        notes.write_text("mine\n")
        return str(notes), rf"output_dir {root}/notes.txt is a file, not a folder"
    if case == "under a file":
        notes.write_text("mine\n")
        return str(notes / "run"), rf"output_dir {root}/notes.txt/run is under {root}/notes.txt, which is a file"
    if case == "a folder of someone else's files":
        project.mkdir()
        (project / "README.md").write_text("# my project\n")
        (project / "config.json").write_text("{}\n")
        return str(project), rf"output_dir {root}/project holds files of something else \(README.md, config.json\)"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["a file", "under a file", "a folder of someone else's files"])
def test_an_output_dir_that_is_not_a_free_folder_is_refused_before_any_data_is_read(tmp_path, case):
    output_dir, says = _place(tmp_path, case)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    proc = recipe(NO_DATA, f"output_dir={output_dir}")
    assert_one_line_exit(proc, 2, rf"^error: {says}")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing replaced, nothing added


def test_an_empty_output_dir_or_the_current_directory_is_refused_unless_meant(tmp_path):
    here = tmp_path / "job"
    here.mkdir()
    (here / "train.sh").write_text("python recipes/pretrain_mlm.py output_dir=$OUT\n")
    empty = recipe(NO_DATA, "output_dir=", cwd=here)  # $OUT unset
    assert_one_line_exit(empty, 2, r"^error: output_dir is empty \(an unset variable in a job script\?\)")
    dot = recipe(NO_DATA, "output_dir=.", cwd=here)
    assert_one_line_exit(dot, 2, r"^error: output_dir \. is the current directory.*pass write_into_cwd=true if you mean it")
    meant = recipe(NO_DATA, "output_dir=.", "write_into_cwd=true", cwd=here)  # still someone else's files
    assert_one_line_exit(meant, 2, r"^error: output_dir \. holds files of something else \(train.sh\)")
    assert sorted(p.name for p in here.iterdir()) == ["train.sh"]
    (here / "train.sh").unlink()
    meant = recipe(NO_DATA, "output_dir=.", "write_into_cwd=true", cwd=here)  # an empty folder, as said: on to the data
    assert_one_line_exit(meant, 2, r"^error: .*/nonexistent/train.jsonl")


@pytest.mark.parametrize("name", ["study_vision", "glue"])
def test_studies_and_glue_refuse_an_empty_output_dir_and_the_current_directory(tmp_path, name):
    """They write results of their own beside their runs' folders (a study's first run started in the
    current directory, unasked)."""
    here = tmp_path / "job"
    here.mkdir()

    def nlp_ssl_run(*args):
        return subprocess.run([sys.executable, "-m", "nlp_ssl", "run", name, *args], capture_output=True, text=True,
                              timeout=300, cwd=here, env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})

    assert_one_line_exit(nlp_ssl_run("output_dir="), 2, r"^error: output_dir is empty \(an unset variable in a job script\?\)")
    assert_one_line_exit(nlp_ssl_run("output_dir=."), 2, r"^error: output_dir \. is the current directory.*write_into_cwd=true")
    assert list(here.iterdir()) == []


def test_a_read_only_output_dir_gets_one_line(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -rm (a private mount namespace) to mount a read-only tmpfs")
    ro = tmp_path / "ro"
    ro.mkdir()
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain_mlm.py"), *SMALL, NO_DATA, f"output_dir={ro}/run"]
    script = f"mount -t tmpfs -o ro tmpfs {ro} && cd {ROOT} && " + " ".join(f"'{c}'" for c in cmd)
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
    assert_one_line_exit(proc, 2, rf"^error: output_dir {re.escape(str(ro))}/run cannot be written: Read-only file system$")


# ----------------------------------------------------------------------------------- values that cannot be meant


BAD_VALUES = {
    "seed=-1": r"seed must be in \[0, 4294967295\], got -1",
    f"seed={2**40}": rf"seed must be in \[0, 4294967295\], got {2**40}",
    "log.report_to=[foo]": r"log.report_to: unknown tracker 'foo'; choose from aim, clearml, comet_ml, .*tensorboard.*wandb",
    "optim.warmup_steps=10":
        r"optim.warmup_steps 10 is not below train.max_steps 4: the learning rate would never leave its warmup",
    "resume_changed=[lr]":
        r"resume_changed: 'lr' is not one of the settings a resume checks \(seed, train.global_batch_size",
}


@pytest.mark.parametrize("override", list(BAD_VALUES))
def test_a_value_that_cannot_be_meant_gets_one_line_before_any_data_is_read(tmp_path, override):
    proc = recipe(NO_DATA, f"output_dir={tmp_path / 'run'}", "train.max_steps=4", override)
    assert_one_line_exit(proc, 2, rf"^error: {BAD_VALUES[override]}")
    assert not (tmp_path / "run").exists()


def test_an_unknown_metric_for_best_is_refused_before_training(tmp_path, corpus):
    out = tmp_path / "run"
    proc = recipe(f"data.train_file={corpus}", f"output_dir={out}", "train.max_steps=4", "save.every=1",
                  "eval.metric_for_best=f1")
    assert_one_line_exit(proc, 2, r"^error: eval.metric_for_best 'f1' is not reported; "
                                  r"choose one of \['accuracy', 'loss', 'perplexity'\]$")
    assert not (out / "checkpoints").exists(), "it trained (and saved) before refusing"


# ----------------------------------------------------------------------------------- a resume that changes the run


def test_resume_with_another_batch_size_is_refused_unless_said(tmp_path, corpus):
    out = tmp_path / "run"
    first = recipe(f"data.train_file={corpus}", f"output_dir={out}", "train.max_steps=4", "save.every=2")
    assert first.returncode == 0, first.stderr[-3000:]
    again = recipe(NO_DATA, f"output_dir={out}", "train.max_steps=6", "train.global_batch_size=16", "seed=7", "resume=auto")
    assert_one_line_exit(again, 2, r"^error: resume=auto: seed 42 → 7; train.global_batch_size 8 → 16 since checkpoint \S+"
                                   r"step_00000002, which changes the data order or the learning-rate schedule of the run; "
                                   r"go back to the checkpoint's values, or pass resume_changed=\[seed,train.global_batch_size\]")


def test_resume_changed_names_the_settings_that_may_differ(tmp_path, caplog):
    from nlp_ssl.config import build_config, to_dict
    from nlp_ssl.errors import ConfigError
    from nlp_ssl.training.run_config import TrainConfig
    from nlp_ssl.training.setup import check_resume_settings

    checkpoint = tmp_path / "step_00000002"
    checkpoint.mkdir()
    saved = build_config(TrainConfig, {"train.global_batch_size": 8, "impl.micro_batch_size": 8, "train.max_steps": 10})
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 2, "run_config": to_dict(saved)}))
    bigger = build_config(TrainConfig, {
        "train.global_batch_size": 16, "impl.micro_batch_size": 16, "train.max_steps": 10, "resume": "auto",
    })
    with pytest.raises(ConfigError, match=r"train.global_batch_size 8 → 16; impl.micro_batch_size 8 → 16 since"):
        check_resume_settings(bigger, checkpoint)
    bigger.resume_changed = ["train.global_batch_size"]
    with pytest.raises(ConfigError, match=r"resume=auto: impl.micro_batch_size 8 → 16 since"):
        check_resume_settings(bigger, checkpoint)
    bigger.resume_changed = ["train.global_batch_size", "impl.micro_batch_size"]
    check_resume_settings(bigger, checkpoint)
    # A checkpoint of before the config had sections names its settings flat: still compared.
    flat = {"seed": 42, "global_batch_size": 8, "micro_batch_size": 8, "max_steps": 10}
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 2, "run_config": flat}))
    bigger.resume_changed = []
    with pytest.raises(ConfigError, match=r"train.global_batch_size 8 → 16; impl.micro_batch_size 8 → 16 since"):
        check_resume_settings(bigger, checkpoint)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 2, "run_config": to_dict(saved)}))
    longer = build_config(TrainConfig, {
        "train.global_batch_size": 8, "impl.micro_batch_size": 8, "train.max_steps": 20, "resume": "auto",
    })  # to extend a run
    with caplog.at_level("WARNING", logger="nlp_ssl.trainer"):
        check_resume_settings(longer, checkpoint)
    assert ("resuming with train.max_steps 20 (the checkpoint's run had 10): the linear schedule is now sized to 20 steps"
            in caplog.text)


# ----------------------------------------------------------------------------------- signals


def start(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain_mlm.py"), *SMALL, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})


def wait_for(child: subprocess.Popen, pattern: str, seen: list[str], timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = child.stdout.readline()
        if not line:
            raise AssertionError("the run ended before the expected line: " + "".join(seen[-30:]))
        seen.append(line)
        if re.search(pattern, line):
            return
    raise AssertionError(f"no line matching {pattern!r} within {timeout}s")


def preempted_before_the_lock(out: Path) -> int:
    """A recipe started in this process (``cli.run``, then its config read), with SIGTERM arriving
    before the run locks ``output_dir``; the exit code."""
    from nlp_ssl.cli import run
    from nlp_ssl.config import parse_config
    from nlp_ssl.training.run_config import TrainConfig

    def main():
        parse_config(TrainConfig, [f"output_dir={out}"])
        assert callable(signal.getsignal(signal.SIGTERM)), "cli.run catches SIGTERM from its start"
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    with pytest.raises(SystemExit) as ended:
        run(main)
    return ended.value.code


@pytest.mark.parametrize("folder", ["held by a live run", "of someone else's files"])
def test_sigterm_before_the_lock_writes_no_status_where_the_run_may_not_write(tmp_path, folder):
    out = tmp_path / "run"
    out.mkdir()
    if folder == "held by a live run":
        holder = (out / ".lock").open("w")  # another open file: flock sees another holder, as across processes
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        (out / "README.md").write_text("# mine\n")
    before = sorted(p.name for p in out.iterdir())
    assert preempted_before_the_lock(out) == 75
    assert sorted(p.name for p in out.iterdir()) == before


def test_sigterm_at_any_moment_of_setup_is_a_preemption_that_a_requeue_loop_understands(tmp_path, corpus):
    out = tmp_path / "run"
    # The first launch, stopped before it locks output_dir: the folder is made for run_status.json.
    assert preempted_before_the_lock(out) == 75
    early = "SIGTERM before the run was set up: nothing was lost; continue with resume=auto"
    assert status(out) | {"time": None} == {"status": "preempted", "exit_code": 75, "step": 0, "message": early, "time": None}
    # Requeued, stopped again while data and model are set up.
    run = [f"data.train_file={corpus}", f"output_dir={out}", "train.max_steps=4", "resume=auto"]
    child, seen = start(*run), []
    wait_for(child, r"micro-batch 8 × 1 accumulation", seen)  # set up: data, tokenizer and model come next
    child.send_signal(signal.SIGTERM)
    log = child.communicate(timeout=300)[0]
    assert child.returncode == 75, "".join(seen) + log
    assert "Traceback" not in log and "step 1" not in log
    says = "SIGTERM before training started: nothing was lost; continue with resume=auto"
    assert log.strip().splitlines()[-1] == f"stopped: {says}"
    assert status(out) | {"time": None} == {"status": "preempted", "exit_code": 75, "step": 0, "message": says, "time": None}
    # The README's loop requeues only after a preemption: a setup that fails now must not look like one.
    broken = recipe(NO_DATA, f"output_dir={out}", "train.max_steps=4", "resume=auto")
    assert broken.returncode == 2 and status(out)["status"] != "preempted"
    requeued = recipe(*run)
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert status(out)["status"] == "finished"


def test_a_second_ctrl_c_aborts_and_says_so_in_the_run_status(tmp_path, corpus):
    out = tmp_path / "run"
    child, seen = start(f"data.train_file={corpus}", f"output_dir={out}", "train.max_steps=100000", "eval.every=1"), []
    wait_for(child, r"step 2: eval_loss", seen)
    child.send_signal(signal.SIGINT)
    wait_for(child, r"received SIGINT: finishing this optimizer step", seen)  # two at once could arrive as one
    child.send_signal(signal.SIGINT)
    log = child.communicate(timeout=300)[0]
    assert child.returncode == 130, "".join(seen) + log
    assert "second SIGINT: aborting without saving" in log
    assert status(out)["status"] == "interrupted" and status(out)["exit_code"] == 130


# ----------------------------------------------------------------------------------- what a run says


def test_a_run_ends_with_a_summary_says_what_precision_ran_and_saves_quietly(tmp_path, corpus):
    from transformers import pipeline

    out = tmp_path / "run"
    proc = recipe(f"data.train_file={corpus}", f"output_dir={out}", "train.max_steps=4", "save.every=2", "eval.every=2",
                  "impl.mixed_precision=fp16", "log.progress_bar=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "impl.mixed_precision=fp16 needs a GPU: this run trains in fp32 on the CPU" in proc.stderr
    assert json.loads((out / "all_results.json").read_text())["mixed_precision"] == "no"
    assert "precision fp32 (impl.mixed_precision=fp16)" in proc.stderr
    # A checkpoint and each model save are quiet: no line per file from accelerate, no shard bar.
    assert (out / "checkpoints" / "step_00000002").is_dir()
    for noise in ("accelerate.checkpointing", "Saving current state", "Removed shared tensor", "Writing model shards"):
        assert noise not in proc.stderr, noise
    # The last words are a summary for people, not a dict.
    summary = proc.stdout.strip().splitlines()
    assert re.match(r"^finished 4 steps in \d+ s: eval_loss \d\.\d+, eval_perplexity \d+\.?\d*, eval_accuracy 0\.\d+", summary[0])
    assert f"  model:       {out}/ (a plain Hugging Face folder; its README.md is the model card)" in summary
    assert f"  loss plot:   {out}/loss_curves.png" in summary and f"  all results: {out}/all_results.json" in summary
    # The card's load snippet works from wherever the reader stands.
    line = next(x for x in (out / "README.md").read_text().splitlines() if x.startswith("model = pipeline("))
    assert line == f'model = pipeline("fill-mask", model="{out.resolve()}")'
    fill = pipeline("fill-mask", model=re.search(r'model="([^"]+)"', line).group(1))
    assert len(fill(f"the cat {fill.tokenizer.mask_token} on a mat.")) == 5


def test_progress_bar_false_silences_every_bar(tmp_path, corpus):
    proc = recipe(f"data.train_file={corpus}", f"output_dir={tmp_path / 'run'}", "train.max_steps=2", "save.every=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    bars = [line for line in re.split(r"[\r\n]", proc.stderr) if re.search(r"\d+%\||it/s]|examples/s]", line)]
    assert not bars, bars[:5]
