"""`recipes/pretrain_mlm.py` as users run it: subprocesses, checkpoints reloaded by plain transformers."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import ROOT, run_recipe

pytestmark = pytest.mark.slow

SMALL = [
    "data.block_size=64", "impl.micro_batch_size=8", "train.global_batch_size=8", "eval.every=6", "log.every=2",
    "tokenizer.vocab_size=2000", "log.progress_bar=false", "data.validation_split=0.1",
]
#: The default architecture (ModernBERT) and classic post-LN BERT.
ARCHS = {
    "modernbert": ["model.arch=modernbert"],
    "bert": ["model.arch=bert", "model.config_overrides={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}"],
}


def small_run(wiki_jsonl, out, *extra):
    return [f"data.train_file={wiki_jsonl}", f"output_dir={out}", *SMALL, *extra]


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_recipe_checkpoint_loads_in_fill_mask_pipeline(tmp_path, wiki_jsonl, arch):
    out = tmp_path / "run"
    proc = run_recipe("pretrain_mlm.py", *small_run(wiki_jsonl, out, "train.max_steps=12", "save.every=6", *ARCHS[arch]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["steps"] == 12 and results["eval_loss"] < 9.0

    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    from nlp_ssl.objectives import MLMCollator
    from nlp_ssl.tasks.masked_lm import MaskedLMTask, mlm_parts

    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.model_type == arch and type(model).__name__.endswith("ForMaskedLM")
    fill = pipeline("fill-mask", model=str(out))
    tok = fill.tokenizer
    predictions = fill(f"the history of the {tok.mask_token} is long.")
    assert len(predictions) == 5 and all(0 <= p["score"] <= 1 for p in predictions)

    # The sparse training head and the saved full head give identical logits at masked positions.
    texts = ["the river flows through the old city and into the sea."] * 2
    batch = MLMCollator(AutoTokenizer.from_pretrained(out), mlm_probability=0.5, seed=0)(
        [{"input_ids": ids} for ids in tok(texts)["input_ids"]]
    )
    model.eval()
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        encoder, head = mlm_parts(model)
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        keep = batch["labels"] != -100
        sparse = head(hidden[keep])
        out_sparse = MaskedLMTask(model)(**batch)["losses"]["loss"]
        out_dense = MaskedLMTask(model, sparse=False)(**batch)["losses"]["loss"]
    torch.testing.assert_close(sparse, full[keep])
    torch.testing.assert_close(out_sparse[0], out_dense[0], rtol=1e-5, atol=1e-4)
    assert (out / "loss_curves.png").is_file() and (out / "README.md").is_file()
    assert list((out / "logs").rglob("events.out.tfevents.*")), "tensorboard logs missing"


def test_resume_after_kill_gives_identical_weights(tmp_path, wiki_jsonl):
    # 40 documents make a few batches an epoch: the runs cross epoch boundaries, before and after the kill.
    args = ["train.max_steps=16", "save.every=4", "save.total_limit=2", "data.max_train_documents=40"]
    straight = tmp_path / "straight"
    proc = run_recipe("pretrain_mlm.py", *small_run(wiki_jsonl, straight, *args))
    assert proc.returncode == 0, proc.stderr[-3000:]

    killed = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "recipes" / "pretrain_mlm.py"), *small_run(wiki_jsonl, killed, *args)]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_00000008").exists():
        assert child.poll() is None, "run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (killed / "all_results.json").exists()

    proc = run_recipe("pretrain_mlm.py", *small_run(wiki_jsonl, killed, *args, "resume=auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ra, rb = (json.loads((d / "all_results.json").read_text()) for d in (straight, killed))
    assert ra["eval_loss"] == rb["eval_loss"]
    history = json.loads((killed / "trainer_history.json").read_text())
    assert max(h.get("epoch", 0) for h in history) >= 1


def test_two_process_ddp_matches_one_process(tmp_path, wiki_jsonl):
    args = ["train.max_steps=6", "save.every=100", "train.global_batch_size=16", "impl.micro_batch_size=8"]
    one = tmp_path / "one"
    proc = run_recipe("pretrain_mlm.py", *small_run(wiki_jsonl, one, *args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"]
    proc = run_recipe("pretrain_mlm.py", *small_run(wiki_jsonl, two, *args), launcher=launcher)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = weights(one), weights(two)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    ra, rb = (json.loads((d / "all_results.json").read_text()) for d in (one, two))
    assert ra["eval_loss"] == pytest.approx(rb["eval_loss"], rel=1e-5)
    assert ra["train_tokens"] == rb["train_tokens"]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("empty", "data.train_file {path}: file is empty"),
        ("no_column", "no column 'text' (columns: body)"),
        ("missing_field", "line 2: field 'text' missing"),
        ("not_utf8", "line 2: not valid UTF-8 (byte 0xff)"),
        ("block_size", "data.block_size 1024 is larger than the model's 512 positions"),
        ("resume", "resume path {tmp}/nowhere does not exist"),
        ("unknown_key", "unknown config key 'mlm.probability'"),
        ("no_mask", "has no mask token"),
        ("earlier_run", "already holds checkpoints of an earlier run (latest: step_00000004); pass resume=auto"),
    ],
)
def test_bad_input_fails_with_one_clear_line(tmp_path, wiki_jsonl, case, expected):
    path = tmp_path / "train.jsonl"
    extra = []
    if case == "empty":
        path.write_text("")
    elif case == "no_column":
        path.write_text('{"body": "a b c"}\n')
    elif case == "missing_field":
        path.write_text('{"text": "one two"}\n{"other": "x"}\n')
    elif case == "not_utf8":
        path.write_bytes(b'{"text": "fine"}\n{"text": "bad \xff byte"}\n')
    else:
        path = wiki_jsonl
        extra = {
            "block_size": ["data.block_size=1024"],
            "resume": [f"resume={tmp_path}/nowhere"],
            "unknown_key": ["mlm.probability=0.2"],
            "no_mask": [f"tokenizer.name_or_path={tmp_path}/tok"],
            "earlier_run": [],
        }[case]
    if case == "earlier_run":
        from nlp_ssl.training.checkpointing import STATE_FILE

        earlier = tmp_path / "out" / "checkpoints" / "step_00000004"
        earlier.mkdir(parents=True)
        (earlier / STATE_FILE).write_text("{}")
    if case == "no_mask":
        from nlp_ssl.text.tokenizers import train_tokenizer
        from tests.helpers import toy_texts

        train_tokenizer("bytelevel_bpe", toy_texts(50), 300, tmp_path / "tok").save_pretrained(tmp_path / "tok")
        cfg = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
        cfg.pop("mask_token", None)
        (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps(cfg))
        tok = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
        tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "<mask>"]
        (tmp_path / "tok" / "tokenizer.json").write_text(json.dumps(tok))
    proc = run_recipe("pretrain_mlm.py", f"data.train_file={path}", f"output_dir={tmp_path}/out", *SMALL, "train.max_steps=2",
                      *extra)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected.format(path=path, tmp=tmp_path) in last, last
    if case == "earlier_run":  # the earlier run's checkpoint is untouched
        assert [p.name for p in (tmp_path / "out" / "checkpoints").iterdir()] == ["step_00000004"]
    else:
        assert not (tmp_path / "out" / "checkpoints").exists()
