"""Checkpoints as runs meet them on shared clusters, damaged for real under recipe subprocesses: a damaged
newest checkpoint (named when asked for, skipped by ``resume=auto``, the run then exactly as if it had
resumed from the older one), a finished run resumed again, and a disk that fills up mid-save.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nlp_ssl.training import checkpointing as ckpt
from tests.fault_runs import CONSTANT, args, same_weights, status, write_corpus
from tests.helpers import ROOT, assert_one_line_exit, run_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("faults"))


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
