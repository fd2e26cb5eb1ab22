"""The installed ``nlp-ssl`` command (``nlp_ssl.cli``): ls, run and cp through the venv's entry point."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.test_recipe_losses import COMMON, PINS, RUNS, first_losses

pytestmark = pytest.mark.slow

NLP_SSL = Path(sys.executable).parent / "nlp-ssl"
RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.py") if not p.name.startswith("_"))


def nlp_ssl(*args, cwd, launcher=None):
    cmd = [*(launcher or []), *(args if launcher else [str(NLP_SSL), *args])]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def mlm_args(wiki_jsonl, out):
    script, args, _ = RUNS["mlm"]
    return [f"data.train_file={wiki_jsonl}", f"output_dir={out}", *COMMON, *args]


def test_ls_lists_every_recipe_with_its_config(tmp_path):
    proc = nlp_ssl("ls", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[1:]}
    assert sorted(rows) == RECIPES
    assert all(rows[name].split(",")[0] == f"{name}.yaml" for name in RECIPES), rows
    assert rows["pretrain_mlm"].split(",") == ["pretrain_mlm.yaml", "pretrain_mlm_continue.yaml",
                                                 "pretrain_mlm_simcse.yaml"], rows


def test_run_is_the_recipe_from_any_folder_and_errors_are_one_line(tmp_path, wiki_jsonl):
    out = tmp_path / "mlm"
    proc = nlp_ssl("run", "pretrain_mlm", "--config", "pretrain_mlm", *mlm_args(wiki_jsonl, out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert first_losses(out) == [pytest.approx(row, rel=1e-4) for row in PINS["mlm"]]
    assert (out / "model.safetensors").is_file()

    proc = nlp_ssl("run", "pretrain_mlm", f"output_dir={tmp_path}/bad", "mlm.probability=0.2", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert "unknown config key 'mlm.probability'" in proc.stderr
    proc = nlp_ssl("run", "pretrain_mln", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown recipe 'pretrain_mln'; choose one of" in proc.stderr, proc.stderr


def test_run_under_a_two_process_launch(tmp_path, wiki_jsonl):
    """``accelerate launch -m nlp_ssl run``: two processes of 4 examples reach the one-process losses of 8."""
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29537", "-m", "nlp_ssl"]
    proc = nlp_ssl("run", "pretrain_mlm", *mlm_args(wiki_jsonl, out), "impl.micro_batch_size=4", cwd=tmp_path, launcher=launcher)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert first_losses(out) == [pytest.approx(row, rel=1e-3) for row in PINS["mlm"]]


def test_cp_gives_a_recipe_that_reads_its_own_copied_config(tmp_path):
    proc = nlp_ssl("cp", "pretrain_mlm", "mine", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    recipe, config = tmp_path / "mine" / "pretrain_mlm.py", tmp_path / "mine" / "configs" / "pretrain_mlm.yaml"
    assert recipe.read_text() == (ROOT / "recipes" / "pretrain_mlm.py").read_text()
    assert config.read_text() == (ROOT / "recipes" / "configs" / "pretrain_mlm.yaml").read_text()

    config.write_text(config.read_text() + "my_edit: 1\n")  # the copy must read this file, not the installed one
    for cmd in ([sys.executable, str(recipe)], [str(NLP_SSL), "run", str(recipe)]):
        proc = subprocess.run([*cmd, f"output_dir={tmp_path}/out"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 2 and f"{config}: unknown config key 'my_edit'" in proc.stderr, proc.stderr

    proc = nlp_ssl("cp", "pretrain_mlm", "mine", cwd=tmp_path)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert "my_edit" in config.read_text()
    proc = nlp_ssl("cp", "pretrain_clm", "clm.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "clm.yaml").read_text() == (ROOT / "recipes" / "configs" / "pretrain_clm.yaml").read_text()
    assert not (tmp_path / "pretrain_clm.py").exists()
