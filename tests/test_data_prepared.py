"""The prepared token store (``nlp-ssl prepare``, ``data.prepared``): the same blocks as tokenizing at the
start of a run, narrow dtypes, a killed preparation that continues, settings that disagree refused
with one line, and runs from a store that train as runs from text do and resume exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nlp_ssl.data.prepare import PrepareConfig, prepare
from nlp_ssl.data.prepared import PreparedStore, read_manifest
from nlp_ssl.data.text import TextDataConfig, load_text_splits, tokenize_and_pack
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.objectives.mlm import contiguous_word_index
from nlp_ssl.text.tokenizers import TokenizerConfig
from tests.helpers import ROOT, run_recipe, toy_texts, write_jsonl

TOKENIZERS = ROOT / "tests" / "data" / "tokenizers"


@pytest.fixture(scope="module")
def toy_corpus(tmp_path_factory) -> Path:
    """3,000 short documents: three 1,000-document batches per shard at documents_per_shard=1000."""
    return write_jsonl(tmp_path_factory.mktemp("toy") / "train.jsonl", [{"text": t} for t in toy_texts(3000)])


def prepare_config(out: Path, corpus: Path, **settings) -> PrepareConfig:
    data = {"train_file": str(corpus), "block_size": 32, "validation_split": 0.1, "cache_dir": str(out.parent / "cache"),
            **settings.pop("data", {})}
    tokenizer = settings.pop("tokenizer", {"name_or_path": str(TOKENIZERS / "wordpiece")})
    return PrepareConfig(output_dir=str(out), data=TextDataConfig(**data), tokenizer=TokenizerConfig(**tokenizer), **settings)


def rows(blocks, column: str) -> np.ndarray:
    return np.array([blocks[i][column] for i in range(len(blocks))])


@pytest.mark.parametrize("kind, word_ids, num_proc", [("wordpiece", True, None), ("bytelevel_bpe", False, 2)])
def test_store_holds_the_blocks_that_tokenize_and_pack_makes(tmp_path, toy_corpus, kind, word_ids, num_proc):
    cfg = prepare_config(tmp_path / "store", toy_corpus, tokenizer={"name_or_path": str(TOKENIZERS / kind)},
                         data={"num_proc": num_proc}, word_ids=word_ids, documents_per_shard=1000)
    prepare(cfg)
    store = PreparedStore(TextDataConfig(prepared=cfg.output_dir, block_size=32))
    blocks = store.blocks(word_ids=word_ids)
    raw = load_text_splits(cfg.data, seed=cfg.seed)
    tokenizer = store.tokenizer(TokenizerConfig())
    manifest = read_manifest(cfg.output_dir)
    assert manifest["dtype"] == "uint16" and len(manifest["splits"]["train"]["shards"]) == 3
    for split in ("train", "validation"):
        expected = tokenize_and_pack(raw[split], tokenizer, "text", 32, word_ids=word_ids)
        assert len(blocks[split]) == len(expected) > 0
        assert np.array_equal(rows(blocks[split], "input_ids"), np.array(expected["input_ids"]))
        if word_ids:  # the collator numbers words per block: that numbering must be the same
            expected_words = contiguous_word_index(torch.tensor(expected["word_ids"]))
            assert torch.equal(torch.tensor(rows(blocks[split], "word_ids")), expected_words)
        else:
            assert "word_ids" not in blocks[split][0]
    tokens = sum(manifest["splits"][s]["tokens"] for s in ("train", "validation"))
    on_disk = sum(p.stat().st_size for p in Path(cfg.output_dir).glob("*/*.tokens"))
    assert on_disk == 2 * tokens  # two bytes a token, nothing else in the token files
    words = sum(p.stat().st_size for p in Path(cfg.output_dir).glob("*/*.words"))
    assert words == (tokens // 32 * 8 if word_ids else 0)  # two bit planes: 8 bytes per 32-token block


def test_a_vocabulary_past_65536_is_stored_as_uint32_and_read_back_exactly(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[SEP]": 2, **{f"w{i}": i + 3 for i in range(70_000)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", sep_token="[SEP]").save_pretrained(
        tmp_path / "tok")
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(60_000, 70_000, 50)) for _ in range(40)]
    corpus = write_jsonl(tmp_path / "big.jsonl", [{"text": t} for t in texts])
    cfg = prepare_config(tmp_path / "store", corpus, tokenizer={"name_or_path": str(tmp_path / "tok")})
    prepare(cfg)
    assert read_manifest(cfg.output_dir)["dtype"] == "uint32"
    blocks = PreparedStore(TextDataConfig(prepared=cfg.output_dir, block_size=32)).blocks()["train"]
    raw = load_text_splits(cfg.data, seed=0)["train"]
    expected = tokenize_and_pack(raw, PreparedStore(TextDataConfig(prepared=cfg.output_dir, block_size=32)).tokenizer(
        TokenizerConfig()), "text", 32)
    got = rows(blocks, "input_ids")
    assert got.max() > 65_535 and np.array_equal(got, np.array(expected["input_ids"]))


def test_a_killed_preparation_continues_and_keeps_its_finished_shards(tmp_path):
    corpus = write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in toy_texts(15_000, seed=1)])
    out = tmp_path / "store"
    settings = [f"output_dir={out}", f"data.train_file={corpus}", "data.block_size=32", f"data.cache_dir={tmp_path / 'cache'}",
                f"tokenizer.name_or_path={TOKENIZERS / 'wordpiece'}", "documents_per_shard=1000", "word_ids=true"]
    child = subprocess.Popen([sys.executable, "-m", "nlp_ssl", "prepare", *settings], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = out / "train" / "00000.tokens"
    deadline = time.time() + 300
    while not first.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)  # as an out-of-memory kill or a lost node would
    child.wait()
    assert first.exists() and not (out / "manifest.json").exists(), child.stderr.read()[-2000:]
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "train").glob("*.tokens")}
    assert 0 < len(kept) < 15

    with pytest.raises(DataError, match="did not finish"):
        PreparedStore(TextDataConfig(prepared=str(out), block_size=32))
    proc = subprocess.run([sys.executable, "-m", "nlp_ssl", "prepare", *settings], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(kept)} of 15 shards already written" in proc.stderr
    for name, stamp in kept.items():
        path = out / "train" / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, f"{name} was rewritten"
    assert not list(out.rglob(".*.tmp-*")), "a half-written shard was left behind"

    straight = tmp_path / "straight"
    prepare(PrepareConfig(output_dir=str(straight), data=TextDataConfig(
        train_file=str(corpus), block_size=32, cache_dir=str(tmp_path / "cache")),
        tokenizer=TokenizerConfig(name_or_path=str(TOKENIZERS / "wordpiece")), documents_per_shard=1000, word_ids=True))
    def shard_files(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for p in [*root.glob("*/*.tokens"), *root.glob("*/*.words")])

    files = shard_files(straight)
    shards = sum(len(s["shards"]) for s in read_manifest(straight)["splits"].values())
    assert files == shard_files(out) and len(files) == 2 * shards
    for name in files:
        assert (straight / name).read_bytes() == (out / name).read_bytes(), name


def test_settings_that_disagree_with_the_store_are_refused_with_one_line(tmp_path, toy_corpus, capsys):
    from nlp_ssl import cli

    out = tmp_path / "store"
    cfg = prepare_config(out, toy_corpus)
    prepare(cfg)
    manifest = read_manifest(out)
    # Preparing again with the same settings does nothing; other settings into the same folder are refused.
    shard = out / "train" / "00000.tokens"
    stamp = shard.stat().st_mtime_ns
    prepare(cfg)
    assert shard.stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["prepare", f"output_dir={out}", f"data.train_file={toy_corpus}", "data.block_size=64",
                  "data.validation_split=0.1", f"data.cache_dir={tmp_path / 'cache'}",
                  f"tokenizer.name_or_path={TOKENIZERS / 'wordpiece'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert re.match(rf"error: output_dir {out}: holds a store of other settings \(differs in block_size\)",
                    err.strip().splitlines()[-1]), err

    def opened(**data):
        return PreparedStore(TextDataConfig(prepared=str(out), **{"block_size": 32, **data}))

    with pytest.raises(ConfigError, match=r"holds 32-token blocks, but data.block_size=64"):
        opened(block_size=64)
    with pytest.raises(ConfigError, match=r"was prepared with data.train_file=.*, not 'other.jsonl'"):
        opened(train_file="other.jsonl")
    assert opened(train_file=str(toy_corpus)).manifest == manifest  # repeating the store's own corpus is fine
    with pytest.raises(ConfigError, match="holds no word ids, which whole-word masking needs"):
        opened().blocks(word_ids=True)
    with pytest.raises(ConfigError, match="was tokenized with another tokenizer than"):
        opened().tokenizer(TokenizerConfig(name_or_path=str(TOKENIZERS / "bytelevel_bpe")))
    with pytest.raises(ConfigError, match="data.prepared: a prepared store is read from disk, not streamed"):
        TextDataConfig(prepared=str(out), streaming=True)
    with pytest.raises(DataError, match="not a prepared store"):
        PreparedStore(TextDataConfig(prepared=str(tmp_path)))
    with shard.open("r+b") as f:  # a shard cut short (a copy that did not finish)
        f.truncate(shard.stat().st_size - 64)
    with pytest.raises(DataError, match=rf"shard {shard} is \d+ bytes, not \d+"):
        opened()


# ----------------------------------------------------------------------------------- runs from a store

RUN = ["log.progress_bar=false", "log.every=1", "eval.every=100", "eval.batches=1", "log.report_to=[]", "optim.warmup_ratio=0.0",
       "optim.learning_rate=0.003", "seed=0", "data.block_size=64", "impl.micro_batch_size=8", "train.global_batch_size=8"]


def first_losses(out: Path) -> list[float]:
    return [h["train_loss"] for h in json.loads((out / "trainer_history.json").read_text()) if "train_loss" in h]


def prepared_store(tmp_path: Path, corpus: Path, tokenizer: str, *extra: str) -> Path:
    out = tmp_path / f"store-{tokenizer}"
    proc = subprocess.run([sys.executable, "-m", "nlp_ssl", "prepare", f"output_dir={out}", f"data.train_file={corpus}",
                           "data.block_size=64", "data.validation_split=0.1", f"tokenizer.name_or_path={TOKENIZERS / tokenizer}",
                           *extra], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = r"^prepared .*: train [\d,]+ blocks, validation [\d,]+ blocks of 64 uint16 tokens, 2\.00 bytes/token"
    assert re.search(summary, proc.stdout, re.M), proc.stdout
    return out


@pytest.mark.slow
@pytest.mark.parametrize("recipe, tokenizer, extra, store_extra", [
    ("pretrain_mlm.py", "wordpiece", ["mlm.whole_word_mask=true"], []),
    ("pretrain_clm.py", "bytelevel_bpe", [], ["impl.num_workers=1"]),  # the store's maps reopened in a loader worker
])
def test_a_run_from_a_store_has_the_first_losses_of_a_run_that_tokenizes(tmp_path, wiki_jsonl, recipe, tokenizer, extra,
                                                                          store_extra):
    store = prepared_store(tmp_path, wiki_jsonl, tokenizer, *(["word_ids=true"] if extra else []))
    losses, results = {}, {}
    for name, data in {"text": [f"data.train_file={wiki_jsonl}", "data.validation_split=0.1",
                                f"tokenizer.name_or_path={TOKENIZERS / tokenizer}"],
                       "store": [f"data.prepared={store}", *store_extra]}.items():
        out = tmp_path / name
        proc = run_recipe(recipe, f"output_dir={out}", *RUN, "train.max_steps=4", *data, *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses[name] = first_losses(out)
        results[name] = json.loads((out / "all_results.json").read_text())
    # The same batches give the same losses to float noise: on CI even the first has differed in the 7th digit (a loader
    # worker changes where tensors land in memory, and BLAS may sum in another order). A different batch moves the loss
    # in the 2nd or 3rd digit, so 1e-5 still tells the batches apart.
    assert len(losses["store"]) == 4
    assert losses["store"] == pytest.approx(losses["text"], rel=1e-5, abs=0)
    assert results["store"]["eval_loss"] == pytest.approx(results["text"]["eval_loss"], rel=1e-5, abs=0)
    # The MLM's unigram floor counts the store's tokens from its memory map: the same count.
    baseline = "eval_unigram_baseline_accuracy"
    assert results["store"].get(baseline) == results["text"].get(baseline) and (baseline in results["text"]) == bool(extra)


@pytest.mark.slow
def test_a_run_from_a_store_killed_and_resumed_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, wiki_jsonl):
    from safetensors.torch import load_file

    store = prepared_store(tmp_path, wiki_jsonl, "wordpiece")
    run = [f"data.prepared={store}", *[a for a in RUN if not a.startswith("eval.every")], "train.max_steps=12", "save.every=4",
           "eval.every=1"]  # a "step N:" line each step, to kill the run at
    straight = tmp_path / "straight"
    assert run_recipe("pretrain_mlm.py", f"output_dir={straight}", *run).returncode == 0

    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, str(ROOT / "recipes" / "pretrain_mlm.py"), f"output_dir={killed}", *run],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in child.stdout:
        if re.search(r"step 6: ", line):
            child.kill()  # no chance to save: the resume starts from the step-4 checkpoint
            break
    child.wait()
    assert not (killed / "all_results.json").exists()
    proc = run_recipe("pretrain_mlm.py", f"output_dir={killed}", *run, "resume=auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"resumed from \S+step_00000004 at step 4", proc.stderr), proc.stderr[-2000:]
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
