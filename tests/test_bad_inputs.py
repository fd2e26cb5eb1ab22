"""Inputs a new user gets wrong, each class once, run as users run the recipes: every one ends in one line
naming the key, file, line or value, exit 2, before training starts (``tests/test_faults.py`` holds the
faults of long runs and the bad values of the common keys)."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.helpers import ROOT, assert_one_line_exit, run_recipe, silent_endpoint, toy_texts, write_jsonl

pytestmark = pytest.mark.slow

QUICK = ["train.max_steps=2", "save.every=100", "eval.every=100", "log.every=1", "log.progress_bar=false", "log.report_to=[]",
         "impl.micro_batch_size=8", "train.global_batch_size=8", "data.block_size=32", "tokenizer.vocab_size=300"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "train.jsonl", [{"text": t} for t in toy_texts(200)])


def assert_one_line(proc, pattern: str, code: int = 2) -> None:
    assert_one_line_exit(proc, code, pattern)


def run(recipe: str, tmp_path, *args: str, env: dict | None = None, timeout: int = 300):
    return run_recipe(recipe, f"output_dir={tmp_path / 'run'}", *QUICK, *args, env=env, timeout=timeout)


# ------------------------------------------------------------------------------- a Hub that never answers

@pytest.fixture(scope="module")
def silent_hub():
    with silent_endpoint() as endpoint:
        yield endpoint


@pytest.mark.parametrize("load", [
    ["model.name_or_path=someone/model"],
    ["tokenizer.name_or_path=someone/tokenizer"],
    ["data.source=someone/corpus"],
    ["data.source=someone/corpus", "data.streaming=true"],
], ids=["model", "tokenizer", "dataset", "streamed dataset"])
def test_a_silent_hub_ends_every_load_in_one_line_within_the_timeout(tmp_path, silent_hub, load):
    endpoint, accepted = silent_hub
    began = time.monotonic()
    proc = run("pretrain_mlm.py", tmp_path, *load, "hub.timeout=2",
               env={"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}, timeout=240)
    elapsed = time.monotonic() - began
    assert accepted, "the run never reached the server"
    key, name = load[0].split("=")
    assert_one_line(proc, rf"^error: {re.escape(key)} {name}: the Hub at {endpoint} did not answer within hub.timeout=2s")
    assert elapsed < 90  # start-up and one timed-out request, not the loaders' minutes of retries


@pytest.mark.parametrize("recipe, load", [
    ("finetune_vision.py", ["model.name_or_path=someone/vit", "finetune.aux_weight=0.5", "finetune.aux_task=auto"]),
    ("glue.py", ["glue.data_dir=someone/glue", "model.name_or_path=someone/model"]),
], ids=["vision checkpoint", "glue tasks"])
def test_a_silent_hub_ends_a_load_before_the_run_is_set_up_in_one_line(tmp_path, silent_hub, recipe, load):
    """Vision fine-tuning reads a checkpoint's config to pick its auxiliary loss, and GLUE reads its tasks,
    before a run sets up the Hub's timeout."""
    endpoint, accepted = silent_hub
    began = time.monotonic()
    proc = run_recipe(recipe, f"output_dir={tmp_path / 'run'}", *load, "train.max_steps=2", "hub.timeout=2",
                      env={"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}, timeout=120)
    assert accepted, "the run never reached the server"
    key, name = load[0].split("=")
    assert_one_line(proc, rf"^error: {re.escape(key)} {name}: the Hub at {endpoint} did not answer within hub.timeout=2s")
    assert time.monotonic() - began < 90
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- data sources and files

def test_a_data_source_that_cannot_be_loaded_is_one_line(tmp_path, corpus):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("a folder of text files, not a saved dataset\n", encoding="utf-8")
    cases = [
        (["data.source=nobody/nonexistent-ds"], r"data.source nobody/nonexistent-ds: not a local folder, and "
                                                r"HF_HUB_OFFLINE=1 is set with no copy of it"),
        (["data.source=nobody/nonexistent-ds", "data.streaming=true"], r"data.source nobody/nonexistent-ds: not a local"),
        ([f"data.source={folder}"], rf"data.source {folder}: a folder, but not a dataset written by save_to_disk"),
    ]
    for args, says in cases:
        assert_one_line(run("pretrain_mlm.py", tmp_path, *args), rf"^error: {says}")


def bad_files(tmp):
    rows = [{"text": t} for t in toy_texts(300)]
    lines = [json.dumps(r) for r in rows]

    def jsonl(name, at, line):
        path = tmp / name
        path.write_text("\n".join(lines[:at] + [line] + lines[at + 1:]) + "\n", encoding="utf-8")
        return path

    csv = tmp / "extra.csv"
    csv.write_text("text,label\n" + "".join(f'"{r["text"]}",1\n' if i != 150 else f'"{r["text"]}",1,2,3\n'
                                            for i, r in enumerate(rows)), encoding="utf-8")
    return {
        "null at the start, streamed": (jsonl("null.jsonl", 0, '{"text": null}'), True, "line 1: field 'text' is null"),
        "integer mid-file, streamed": (jsonl("int.jsonl", 250, '{"text": 7}'), True, "line 251: field 'text' holds 7, not text"),
        "integer mid-file": (jsonl("int2.jsonl", 250, '{"text": 7}'), False, "line 251: field 'text' holds 7, not text"),
        "null after a blank line": (jsonl("null2.jsonl", 120, "\n" + '{"text": null}'), False,
                                    "line 122: field 'text' is null"),
        "malformed line, streamed": (jsonl("bad.jsonl", 200, '{"text": "no end'), True, "line 201: not valid JSON"),
        "malformed line": (jsonl("bad2.jsonl", 200, '{"text": "no end'), False, "line 201: not valid JSON"),
        "csv line with extra fields": (csv, False, "line 152: 4 fields where the header has 2"),
    }


@pytest.mark.parametrize("case", ["null at the start, streamed", "integer mid-file, streamed", "integer mid-file",
                                  "null after a blank line", "malformed line, streamed", "malformed line",
                                  "csv line with extra fields"])
def test_a_bad_line_is_named_by_file_and_line_before_training(tmp_path, case):
    path, streamed, says = bad_files(tmp_path)[case]
    proc = run("pretrain_mlm.py", tmp_path, f"data.train_file={path}", f"data.streaming={str(streamed).lower()}",
               "data.streaming_validation_documents=10")
    assert_one_line(proc, rf"^error: data.train_file {re.escape(str(path))} {says}")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_parallel_pairs_row_that_is_not_an_object_is_named(tmp_path):
    rows = [json.dumps({"translation": {"en": f"the cat sat {i}", "es": f"el gato {i}"}}) for i in range(40)]
    rows[30] = json.dumps(["the cat", "el gato"])
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    proc = run_recipe("pretrain_xlm.py", f"output_dir={tmp_path / 'run'}", f"data.pairs_file={pairs}", "train.max_steps=2")
    assert_one_line(proc, rf"^error: data.pairs_file {re.escape(str(pairs))} line 31: a JSON list, not an object")


# ------------------------------------------------------------------------------- checkpoints and tokenizers

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny causal LM and a tiny masked LM, each saved with its own tokenizer."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    from nlp_ssl.text.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("checkpoints")
    gpt2 = train_tokenizer("bytelevel_bpe", toy_texts(300), 400, root / "gpt2")
    config = GPT2Config(vocab_size=len(gpt2), n_embd=32, n_layer=1, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(root / "gpt2")
    bert = train_tokenizer("wordpiece", toy_texts(300), 400, root / "bert")
    BertForMaskedLM(BertConfig(vocab_size=len(bert), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(root / "bert")
    return root


@pytest.mark.parametrize("recipe, checkpoint, says", [
    ("pretrain_mlm.py", "gpt2", r"checkpoint is a causal LM \(gpt2\); masked-LM pretraining needs a masked-LM or encoder"),
    ("pretrain_clm.py", "bert", r"checkpoint is a masked LM or encoder \(bert\); causal-LM pretraining needs a causal-LM"),
])
def test_a_checkpoint_of_the_other_kind_of_language_model_is_refused(tmp_path, corpus, checkpoints, recipe, checkpoint,
                                                                      says):
    proc = run(recipe, tmp_path, f"data.train_file={corpus}", f"model.name_or_path={checkpoints / checkpoint}",
               "optim.learning_rate=1e-4")
    assert_one_line(proc, rf"^error: model.name_or_path {checkpoints / checkpoint}: {says}")


def test_fine_tuning_refuses_a_tokenizer_that_is_not_the_checkpoints(tmp_path, checkpoints):
    """A larger vocabulary would index past the embeddings; one of the same size would scramble them."""
    import shutil

    from nlp_ssl.text.tokenizers import train_tokenizer

    larger = train_tokenizer("wordpiece", toy_texts(300) + [f"zebra{i} yak{i} walrus{i}" for i in range(300)], 600,
                             tmp_path / "larger")
    assert len(larger) > 200
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(checkpoints / "bert" / name, swapped / name)
    spec = json.loads((swapped / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["the"], vocab["cat"] = vocab["cat"], vocab["the"]
    (swapped / "tokenizer.json").write_text(json.dumps(spec))
    bert = checkpoints / "bert"
    for tokenizer, says in (
        (tmp_path / "larger", rf"tokenizer {tmp_path / 'larger'} has {len(larger)} tokens but model.name_or_path {bert} "
                              r"has \d+ embedding rows"),
        (swapped, rf"tokenizer_name_or_path {swapped} is not the tokenizer of model.name_or_path {bert}: 2 of its \d+ "
                  r"tokens have other ids \('the' is"),
    ):
        proc = run_recipe("finetune_text.py", f"output_dir={tmp_path / 'run'}", f"model.name_or_path={bert}",
                          f"tokenizer_name_or_path={tokenizer}", "train.max_steps=2", "data.k_per_class=2",
                          "data.validation_per_class=1", "log.report_to=[]")
        assert_one_line(proc, rf"^error: {says}")


# ------------------------------------------------------------------------------- settings that train nothing useful

def test_settings_that_would_train_on_nothing_are_refused(tmp_path, checkpoints):
    from nlp_ssl.config import load_config
    from nlp_ssl.errors import ConfigError
    from nlp_ssl.text.glue_harness import GlueConfig
    from nlp_ssl.text.text_finetuning import FinetuneTextConfig
    from recipes.pretrain_bert import PretrainBertConfig
    from recipes.pretrain_clm import PretrainDecoderConfig
    from recipes.pretrain_mlm import PretrainMLMConfig

    for cls, overrides, says in [
        (PretrainDecoderConfig, "tokenizer.kind=sentencepiece", "tokenizer.kind 'sentencepiece' is not one of"),
        (FinetuneTextConfig, "data.max_length=0", "data.max_length must be > 0, got 0"),
        (GlueConfig, "glue.epochs=0", "glue.epochs must be > 0, got 0"),
        # Two corpora, one of which would be ignored (a default source steps aside for a file: see below).
        (PretrainMLMConfig, "data.train_file=texts.jsonl data.source=nobody/nonexistent-ds",
         "data.train_file texts.jsonl and data.source nobody/nonexistent-ds are both set, but a run reads one of them: "
         "drop data.source to read the file, or data.train_file to read nobody/nonexistent-ds"),
        (FinetuneTextConfig, "data.train_file=pool.csv data.source=someone/task",
         "data.train_file pool.csv and data.source someone/task are both set, but a run reads one of them: drop data.source"),
        (PretrainBertConfig, "data.train_file=docs.jsonl data.documents=kjv",
         "data.train_file docs.jsonl and data.documents kjv are both set, but a run reads one of them: drop data.documents"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(says)):
            load_config(cls, overrides=overrides.split())
    for cls, recipe in [(PretrainMLMConfig, "pretrain_mlm"), (FinetuneTextConfig, "finetune_text"),
                        (PretrainBertConfig, "pretrain_bert")]:
        shipped = ROOT / "recipes" / "configs" / f"{recipe}.yaml"
        assert load_config(cls, shipped, ["data.train_file=texts.jsonl"]).data.train_file == "texts.jsonl"
    # A length the special tokens fill: inputs with no text in them.
    proc = run_recipe("finetune_text.py", f"output_dir={tmp_path / 'run'}", f"model.name_or_path={checkpoints / 'bert'}",
                      "data.max_length=2", "train.max_steps=2", "data.k_per_class=2", "data.validation_per_class=1")
    assert_one_line(proc, r"^error: data.max_length 2 leaves no room for text: the tokenizer adds 2 special tokens")


def test_a_recipe_named_like_a_file_that_is_not_there_suggests_the_installed_one(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "nlp_ssl", "run", "pretrain_mlm.py", "train.max_steps=1"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert_one_line(proc, r"^error: recipe file pretrain_mlm.py: does not exist; the installed recipe is run by name: "
                          r"nlp-ssl run pretrain_mlm$")
