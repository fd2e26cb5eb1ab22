"""SimCLR (with MICLe's positives) and jigsaw pretraining as users run them: ``nlp-ssl run pretrain_vit
--config pretrain_vit_simclr|pretrain_vit_jigsaw``, the checkpoints loaded by plain transformers and by
``finetune_vision``, a kill and a resume, and SimCLR on two processes."""

import json
import os
import signal
import subprocess
import sys

import datasets
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

TINY_VIT = "model.config_overrides={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}"
SMALL = ["data.max_train_images=192", "data.validation_images=32", "train.global_batch_size=16", "eval.batch_size=16",
         "log.every=1", "log.progress_bar=false", "log.report_to=[]", TINY_VIT]
DDP = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
       "--mixed_precision", "no", "--dynamo_backend", "no"]


def command(config: str, out, *args: str, launcher=None) -> list[str]:
    runner = [*launcher, "-m", "nlp_ssl"] if launcher else [sys.executable, "-m", "nlp_ssl"]
    return [*runner, "run", "pretrain_vit", "--config", config, f"output_dir={out}", *SMALL, *args]


def run(config: str, out, *args: str, launcher=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(config, out, *args, launcher=launcher), capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def history(out) -> list[dict]:
    return json.loads((out / "trainer_history.json").read_text())


# ------------------------------------------------------------------ SimCLR


@pytest.fixture(scope="module")
def simclr_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("simclr") / "run"
    run("pretrain_vit_simclr", out, "train.max_steps=4", "eval.every=2", "save.every=2")
    return out


def test_simclr_saves_a_plain_vit_without_the_projection_and_reports_retrieval(simclr_run):
    from transformers import AutoModel, AutoModelForImageClassification, ViTModel

    out = simclr_run
    results = json.loads((out / "all_results.json").read_text())
    assert results["steps"] == 4 and results["eval_loss"] > 0
    # 16 validation images = 32 views: retrieving the other view of one's own image by chance is 1/31.
    evals = [h for h in history(out) if "eval_retrieval_accuracy" in h]
    assert [h["step"] for h in evals] == [2, 4]
    assert all(0 < h["eval_loss"] < 10 for h in evals)
    saved = weights(out)
    assert "pooler.dense.weight" in saved and not any("projection." in k and "patch" not in k for k in saved)
    model, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert isinstance(model, ViTModel) and not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.pooler_act == "gelu"
    encoder, loaded = AutoModelForImageClassification.from_pretrained(out, num_labels=10).vit.state_dict(), model.state_dict()
    assert encoder.keys() == {k for k in loaded if not k.startswith("pooler.")}
    assert all(torch.equal(encoder[k], loaded[k]) for k in encoder)
    assert "contrastive (SimCLR NT-Xent" in (out / "README.md").read_text()


@pytest.mark.parametrize("config", ["simclr", "jigsaw"])
def test_finetune_vision_takes_the_encoder_of_both_checkpoints(tmp_path, simclr_run, jigsaw_run, config):
    checkpoint = simclr_run if config == "simclr" else jigsaw_run
    out = tmp_path / "ft"
    args = [f"model.name_or_path={checkpoint}", f"output_dir={out}", "data.k_per_class=2", "data.validation_per_class=1",
            "data.max_test_images=50", "train.max_steps=2", "eval.every=2", "save.every=100", "train.global_batch_size=20",
            "impl.micro_batch_size=20", "log.progress_bar=false", "log.report_to=[]"]
    proc = subprocess.run([sys.executable, "-m", "nlp_ssl", "run", "finetune_vision", *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    encoder = [k for k in weights(checkpoint) if not k.startswith(("pooler.", "classifier."))]
    assert results["transferred_tensors"] == len(encoder) == 22  # embeddings 4, one block 16, final norm 2
    assert results["new_tensors"] == ["classifier.weight", "classifier.bias"]


def test_micle_pairs_images_of_one_case_and_a_frozen_patch_projection_stays_put(tmp_path):
    from nlp_ssl.data.images import load_fashion_mnist

    images = load_fashion_mnist("train", cache_dir=None).select(range(240))
    cases = datasets.Dataset.from_dict({"image": list(images["image"]), "case": [i // 3 for i in range(240)]},
                                       features=datasets.Features({"image": datasets.Image(), "case": datasets.Value("int64")}))
    source = tmp_path / "cases"
    cases.save_to_disk(str(source))
    out = tmp_path / "micle"
    run("pretrain_vit_simclr", out, f"data.source={source}", "simclr.group_column=case", "simclr.freeze_patch_projection=true",
        "train.max_steps=3", "eval.every=3", "save.every=2")
    assert "two images of one 'case' group (MICLe)" in (out / "README.md").read_text()
    first, last = weights(out / "checkpoints" / "step_00000002" / "hf_model"), weights(out)
    patch = [k for k in last if "patch_embeddings.projection" in k]
    assert patch and all(torch.equal(first[k], last[k]) for k in patch)
    assert not torch.equal(first["pooler.dense.weight"], last["pooler.dense.weight"])

    bad = run_failing("pretrain_vit_simclr", tmp_path / "bad", f"data.source={source}", "simclr.group_column=patient")
    assert bad.returncode == 2 and "column 'patient' not found" in bad.stderr.strip().splitlines()[-1]


def run_failing(config: str, out, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(config, out, *args), capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_simclr_on_two_processes_trains_as_one_process_on_the_global_micro_batch(tmp_path):
    """Two processes × 8 images contrast against all 16 (negatives gathered with gradients): the losses
    and weights equal one process × 16. Adam's epsilon is set large so that an update is proportional
    to its gradient: a gradient of the wrong scale would change the weights too."""
    args = ["train.max_steps=3", "eval.every=3", "save.every=100", "optim.adam_epsilon=1.0", "optim.learning_rate=0.05",
            "optim.warmup_ratio=0"]
    one, two = tmp_path / "one", tmp_path / "two"
    run("pretrain_vit_simclr", one, *args)
    # eval_batch_size is per process, as micro_batch_size is: 8 each is the same 16 validation images.
    proc = run("pretrain_vit_simclr", two, *args, "eval.batch_size=8", launcher=[*DDP, "--main_process_port", "29561"])
    assert "micro-batch 8 × 1 accumulation × 2 process(es) = 16" in proc.stderr
    losses = [[h["train_loss"] for h in history(out) if "train_loss" in h] for out in (one, two)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    evals = [[h["eval_loss"] for h in history(out) if "eval_loss" in h] for out in (one, two)]
    assert evals[1] == pytest.approx(evals[0], rel=1e-5)
    a, b = weights(one), weights(two)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


# ------------------------------------------------------------------ jigsaw


@pytest.fixture(scope="module")
def jigsaw_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("jigsaw") / "run"
    run("pretrain_vit_jigsaw", out, "train.max_steps=4", "eval.every=2", "save.every=2", "jigsaw.grid=2",
        "jigsaw.num_permutations=6")
    return out


def test_jigsaw_checkpoint_carries_its_permutations(jigsaw_run):
    from transformers import AutoModelForImageClassification

    from nlp_ssl.objectives.jigsaw import permutation_set, permutations_from_labels

    model = AutoModelForImageClassification.from_pretrained(jigsaw_run)
    assert model.config.num_labels == 6
    assert torch.equal(permutations_from_labels(model.config.id2label), permutation_set(4, 6, seed=0))
    results = json.loads((jigsaw_run / "all_results.json").read_text())
    assert results["steps"] == 4 and "eval_accuracy" in results


# ------------------------------------------------------------------ a kill, then resume


@pytest.mark.parametrize("config", ["pretrain_vit_simclr", "pretrain_vit_jigsaw"])
def test_a_killed_run_resumes_to_the_same_weights(tmp_path, config):
    args = ["train.max_steps=7", "eval.every=1", "save.every=3"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(config, straight, *args)
    child = subprocess.Popen(command(config, killed, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    seen = []
    for line in child.stdout:
        seen.append(line)
        if "step 5: eval_loss" in line:  # checkpoint step 3 is complete
            os.killpg(child.pid, signal.SIGKILL)
            break
    child.wait()
    assert child.returncode == -signal.SIGKILL, "".join(seen[-20:])
    assert not (killed / "all_results.json").exists()
    proc = run(config, killed, *args, "resume=auto")
    assert "at step 3 (" in proc.stderr or "at step 6 (" in proc.stderr, proc.stderr[-2000:]
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
