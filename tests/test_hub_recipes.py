"""The recipes pushing to, and resuming from, a Hub: real subprocess runs against the local test Hub.

Each test starts the in-process test Hub (the ``hub`` fixture), runs a recipe the way a user would
(a subprocess, pointed at the server through ``HF_ENDPOINT``/``HF_TOKEN``), and then pulls the result
back with plain ``transformers``/``huggingface_hub`` calls in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlp_ssl.hub import CHECKPOINT_PATH, END_IGNORE_PATTERNS, STAGING_DIR
from tests.helpers import ROOT, WORDS, run_recipe, write_jsonl
from tests.hub_server import TOKEN, USER, hub  # noqa: F401 - `hub` is the fixture

pytestmark = pytest.mark.slow

SMALL = [
    "data.block_size=64", "impl.micro_batch_size=8", "train.global_batch_size=8", "log.every=2", "eval.batches=2",
    "tokenizer.vocab_size=2000", "log.progress_bar=false", "data.validation_split=0.1",
]


def mlm_args(wiki_jsonl, out, *extra) -> list[str]:
    return [f"data.train_file={wiki_jsonl}", f"output_dir={out}", *SMALL, *extra]


def hub_env(hub, tmp_path, token: str | None = TOKEN) -> dict[str, str]:
    """What a user's shell would hold to push to this Hub (a fresh HF_HOME: no saved login)."""
    home = tmp_path / "subprocess_hf_home"
    home.mkdir(exist_ok=True)
    return {"HF_ENDPOINT": hub.url, "HF_TOKEN": token or "", "HF_HUB_OFFLINE": "0", "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1"}


def push_args(repo: str, strategy: str = "end") -> list[str]:
    return ["hub.push=true", f"hub.model_id={USER}/{repo}", f"hub.strategy={strategy}"]


def local_files(folder: Path, skip: tuple[str, ...] = ("checkpoints",)) -> dict[str, bytes]:
    """Files under ``folder`` by relative path, leaving out the top-level folders in ``skip``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in skip}


def top_level_outputs(folder: Path) -> dict[str, bytes]:
    """The top-level files a push at the end uploads: all but the run lock and the launcher's run status."""
    files = {name: content for name, content in local_files(folder).items() if "/" not in name}
    assert {".lock", "run_status.json"} <= files.keys()
    return {name: content for name, content in files.items() if not any(fnmatch(name, p) for p in END_IGNORE_PATTERNS)}


def digests(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in local_files(folder, skip).items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def ok(proc) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------------- 1. push, then pull back
def test_pretrain_push_then_from_pretrained_gives_the_local_weights(hub, tmp_path, wiki_jsonl):
    from transformers import AutoModelForMaskedLM, pipeline

    out = tmp_path / "run"
    proc = run_recipe("pretrain_mlm.py", *mlm_args(wiki_jsonl, out, "train.max_steps=4", "eval.every=2", "save.every=2"),
                      *push_args("mlm-end"), env=hub_env(hub, tmp_path))
    ok(proc)
    assert list((out / "checkpoints").glob("step_*")), "the run should have made local checkpoints"

    files = hub.files(f"{USER}/mlm-end")
    # Local checkpoints, staging copies and temporary folders stay local with the `end` strategy.
    assert not [f for f in files if f.startswith(("checkpoints/", "step_", STAGING_DIR, ".tmp-", ".hub_resume"))]
    local = top_level_outputs(out)
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "all_results.json",
            "loss_curves.png"} <= set(local)
    for name, content in local.items():  # every top-level output, byte for byte
        assert files.get(name) == content, name
    assert [c.message for c in hub.repo(f"{USER}/mlm-end").history()] == ["End of training", "initial commit"]

    card = files["README.md"].decode()
    results = json.loads(files["all_results.json"])
    assert results["steps"] == 4
    assert "pipeline_tag: fill-mask" in card
    assert "masked language modelling" in card  # the objective
    assert str(wiki_jsonl) in card  # the data
    assert f"| eval_loss | {results['eval_loss']:.4f} |" in card  # the metrics
    assert "![loss curves](loss_curves.png)" in card

    pulled = AutoModelForMaskedLM.from_pretrained(f"{USER}/mlm-end", cache_dir=tmp_path / "cache")
    assert hub.requests_to(f"/{USER}/mlm-end/resolve/"), "the model did not come from the test Hub"
    assert_same_weights(pulled.state_dict(), AutoModelForMaskedLM.from_pretrained(out).state_dict())
    fill = pipeline("fill-mask", model=f"{USER}/mlm-end", model_kwargs={"cache_dir": str(tmp_path / "cache")})
    local_fill = pipeline("fill-mask", model=str(out))
    text = f"the history of the {fill.tokenizer.mask_token} is long."
    assert fill(text) == local_fill(text)


# ---------------------------------------------------------------------- 2. kill, lose the disk, resume from the Hub
def test_resume_from_hub_after_kill_and_lost_output_gives_identical_weights(hub, tmp_path, wiki_jsonl):
    steps = ["train.max_steps=8", "save.every=4", "eval.every=4"]
    straight = tmp_path / "straight"
    ok(run_recipe("pretrain_mlm.py", *mlm_args(wiki_jsonl, straight, *steps)))

    repo = f"{USER}/mlm-resume"
    killed = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain_mlm.py"), *mlm_args(wiki_jsonl, killed, *steps),
           *push_args("mlm-resume", "checkpoint")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **hub_env(hub, tmp_path)}
    release = None
    with open(tmp_path / "killed.log", "wb") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            deadline = time.time() + 300
            pushed_step = None
            while pushed_step is None:
                assert child.poll() is None, "run ended before it could be killed"
                assert time.time() < deadline, "step 4 was never pushed"
                if f"{repo}" in {r for _, r in hub.repos}:
                    state = hub.files(repo).get(f"{CHECKPOINT_PATH}/trainer_state.json")
                    pushed_step = json.loads(state)["step"] if state else None
                time.sleep(0.05)
            # Hold the next push before it can commit (preupload changes nothing), then kill the run.
            release = hub.hold("preupload")
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
    if release is not None:
        release.set()
    assert pushed_step == 4
    assert "End of training" not in [c.message for c in hub.repo(repo).history()]
    shutil.rmtree(killed)  # the machine is gone: only the Hub has the run

    from_uri = tmp_path / "from_uri"
    proc = run_recipe("pretrain_mlm.py", *mlm_args(wiki_jsonl, from_uri, *steps, f"resume=hf://{repo}"),
                      env=hub_env(hub, tmp_path))
    ok(proc)
    assert "at step 4" in proc.stderr and "resumed from" in proc.stderr
    expected = load_file(str(straight / "model.safetensors"))
    assert_same_weights(load_file(str(from_uri / "model.safetensors")), expected)
    ra, rb = (json.loads((d / "all_results.json").read_text()) for d in (straight, from_uri))
    assert ra["eval_loss"] == rb["eval_loss"] and rb["steps"] == 8

    # What the resumed run loaded is exactly the pushed checkpoint, and nothing else went under checkpoints/.
    downloaded = from_uri / ".hub_resume" / "hub-resume" / repo.replace("/", "--") / "main" / CHECKPOINT_PATH
    pushed = {f[len(CHECKPOINT_PATH) + 1:]: v for f, v in hub.files(repo).items() if f.startswith("checkpoints/")}
    assert pushed == local_files(downloaded, skip=())
    assert json.loads(pushed["trainer_state.json"])["step"] == 4


# ---------------------------------------------------------------------- 3. a flaky Hub
def test_two_server_errors_on_commit_still_end_in_a_complete_push(hub, tmp_path, wiki_jsonl):
    hub.fail_next(2, 500, routes=("commit",))
    out = tmp_path / "run"
    proc = run_recipe("pretrain_mlm.py", *mlm_args(wiki_jsonl, out, "train.max_steps=2", "eval.every=2", "save.every=100"),
                      *push_args("flaky"), env=hub_env(hub, tmp_path))
    ok(proc)
    assert [r.status for r in hub.requests_to(f"/api/models/{USER}/flaky/commit/")] == [500, 500, 200]
    files = hub.files(f"{USER}/flaky")
    local = top_level_outputs(out)
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "all_results.json"} <= set(local)
    for name, content in local.items():
        assert files.get(name) == content, name


# ---------------------------------------------------------------------- 4. bad credentials
def test_unauthorized_push_fails_before_training_with_one_line_and_leaves_outputs_intact(hub, tmp_path, wiki_jsonl):
    out = tmp_path / "run"
    ok(run_recipe("pretrain_mlm.py", *mlm_args(wiki_jsonl, out, "train.max_steps=2", "eval.every=2", "save.every=100")))
    # Each attempt takes the lock and records its status; the outputs of the earlier run must stay.
    before = {k: v for k, v in digests(out, skip=("logs",)).items() if k not in (".lock", "run_status.json")}
    assert {"model.safetensors", "config.json", "tokenizer.json", "all_results.json"} <= set(before)

    hub.require_token("hf_someoneelse")
    args = mlm_args(wiki_jsonl, out, "train.max_steps=4", "eval.every=2", "save.every=2")
    proc = run_recipe("pretrain_mlm.py", *args, *push_args("denied"), env=hub_env(hub, tmp_path))
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "401" in last and "HF_TOKEN" in last, last
    assert "Traceback" not in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    # The credentials are checked before the first step: nothing trained, nothing overwritten.
    assert "nlp_ssl.trainer: step" not in proc.stderr
    assert {k: v for k, v in digests(out, skip=("logs",)).items() if k not in (".lock", "run_status.json")} == before
    assert [r.status for r in hub.requests_to("/api/repos/create")] == [401]  # not retried
    assert not hub.requests_to("/commit/") and (("model", f"{USER}/denied") not in hub.repos)

    # No token at all: the same, without even asking the Hub.
    hub.requests.clear()
    proc = run_recipe("pretrain_mlm.py", *args, *push_args("denied"), env=hub_env(hub, tmp_path, token=None))
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no Hugging Face token found" in last and "HF_TOKEN" in last, last
    assert hub.requests == []
    assert {k: v for k, v in digests(out, skip=("logs",)).items() if k not in (".lock", "run_status.json")} == before


# ---------------------------------------------------------------------- 5. the token stays secret (and resume=hub)
def test_token_appears_in_no_log_or_file_through_a_push_and_a_hub_resume(hub, tmp_path, wiki_jsonl):
    hub.fail_next(1, 503, routes=("create",))  # a retry: its warning names the URL and the repo
    hub.fail_next(1, 500, routes=("preupload",))
    env = {**hub_env(hub, tmp_path), "HF_HUB_VERBOSITY": "debug"}
    args = ["train.max_steps=4", "eval.every=2", "save.every=2", *push_args("secret", "checkpoint")]
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    procs = [run_recipe("pretrain_mlm.py", *mlm_args(wiki_jsonl, first, *args), env=env)]
    ok(procs[0])
    assert "retrying" in procs[0].stderr  # the error path was taken
    # `resume=hub` (repo from hub_model_id) in a fresh folder: the step-2 checkpoint, then the same steps 3-4.
    procs.append(run_recipe("pretrain_mlm.py", *mlm_args(wiki_jsonl, resumed, *args, "resume=hub"), env=env))
    ok(procs[1])
    assert "at step 2" in procs[1].stderr
    assert_same_weights(load_file(str(resumed / "model.safetensors")), load_file(str(first / "model.safetensors")))
    assert (resumed / ".hub_resume").is_dir()  # the download is among the files scanned below

    for proc in procs:
        assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    scanned = 0
    for folder in (first, resumed, Path(env["HF_HOME"])):
        for path in folder.rglob("*"):
            if path.is_file():
                scanned += 1
                assert TOKEN.encode() not in path.read_bytes(), path
    assert scanned > 20

    repo = hub.repo(f"{USER}/secret")
    assert len(repo.history()) >= 4  # initial, step 2, and two ends of training
    for commit in repo.commits.values():
        assert TOKEN not in commit.message
        for name, content in commit.files.items():
            assert TOKEN.encode() not in content, (commit.message, name)
    assert sum(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests) >= 5  # it was sent...
    for r in hub.requests:  # ...only where it belongs
        others = {k: v for k, v in r.headers.items() if k != "authorization"}
        assert TOKEN not in r.path and TOKEN not in json.dumps(others) and TOKEN.encode() not in r.body, r.path


# ---------------------------------------------------------------------- 6. a fine-tuned classifier, round trip
def labelled_rows(n_per_class: int, seed: int) -> list[dict]:
    """Two easy classes: sentences drawn from two disjoint halves of the toy vocabulary."""
    rng = random.Random(seed)
    halves = {"animals": WORDS[: len(WORDS) // 2], "places": WORDS[len(WORDS) // 2:]}
    rows = [{"text": " ".join(rng.choice(words) for _ in range(rng.randint(6, 14))), "label": label}
            for label, words in halves.items() for _ in range(n_per_class)]
    rng.shuffle(rows)
    return rows


@pytest.mark.skipif(not (ROOT / "recipes" / "finetune_text.py").is_file(), reason="recipes/finetune_text.py not written yet")
def test_finetuned_classifier_round_trips_through_the_hub(hub, tmp_path, wiki_jsonl):
    from transformers import AutoModelForSequenceClassification, pipeline

    mlm = tmp_path / "mlm"
    ok(run_recipe("pretrain_mlm.py", *mlm_args(wiki_jsonl, mlm, "train.max_steps=2", "eval.every=2", "save.every=100")))
    pool = write_jsonl(tmp_path / "pool.jsonl", labelled_rows(20, seed=0))
    test = write_jsonl(tmp_path / "test.jsonl", labelled_rows(6, seed=1))
    out = tmp_path / "cls"
    proc = run_recipe(
        "finetune_text.py", f"model.name_or_path={mlm}", f"data.train_file={pool}", f"data.test_file={test}",
        "data.k_per_class=8", "data.validation_per_class=4", "data.max_length=32", f"output_dir={out}",
        "train.max_steps=4", "eval.every=2", "log.every=2", "impl.micro_batch_size=8", "train.global_batch_size=8",
        "eval.batch_size=8", "log.progress_bar=false", *push_args("cls"), env=hub_env(hub, tmp_path),
    )
    ok(proc)
    files = hub.files(f"{USER}/cls")
    assert "pipeline_tag: text-classification" in files["README.md"].decode()
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()

    cache = str(tmp_path / "cache")
    pulled = AutoModelForSequenceClassification.from_pretrained(f"{USER}/cls", cache_dir=cache)
    assert pulled.config.id2label == {0: "animals", 1: "places"}
    assert_same_weights(pulled.state_dict(), AutoModelForSequenceClassification.from_pretrained(out).state_dict())
    classify = pipeline("text-classification", model=f"{USER}/cls", model_kwargs={"cache_dir": cache})
    local = pipeline("text-classification", model=str(out))
    texts = [r["text"] for r in labelled_rows(3, seed=2)]
    got = classify(texts)
    assert {g["label"] for g in got} <= {"animals", "places"}
    assert got == local(texts)
