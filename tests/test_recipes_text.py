"""The CLM, BERT (MLM + NSP/SOP) and XLM (MLM/TLM alternation) recipes as users run them, and the
alternating batch sampler that XLM's schedule rests on."""

import json

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler, skip_first_batches
from torch.utils.data import ConcatDataset, DataLoader

from nlp_ssl.data.mixing import AlternatingBatchSampler, interleaved_indices, parse_ratio, round_robin_schedule
from nlp_ssl.errors import ConfigError, DataError
from tests.helpers import run_recipe, write_jsonl

COMMON = ["log.progress_bar=false", "log.every=1", "save.every=100", "log.report_to=[]", "optim.warmup_ratio=0.0",
          "optim.learning_rate=0.003"]


def results_and_history(out):
    results = json.loads((out / "all_results.json").read_text())
    history = json.loads((out / "trainer_history.json").read_text())
    return results, history


def assert_loss_falls(out, margin):
    results, history = results_and_history(out)
    first = next(h["train_loss"] for h in history if "train_loss" in h)
    assert results["eval_loss"] < first - margin, (first, results["eval_loss"])
    return results


# --- the sampler --------------------------------------------------------------------------------

SIZES = [40, 25, 30, 50]  # en, fr, es, en-es
NAMES = ["en", "fr", "es", "en-es"]


def source_of(index):
    return int(np.searchsorted(np.cumsum(SIZES), index, side="right"))


def test_round_robin_schedule_spreads_steps_and_rotates_languages():
    members = {"mlm": ["en", "fr", "es"], "tlm": ["en-es"]}
    assert round_robin_schedule({"mlm": 1, "tlm": 1}, members) == ["en", "en-es", "fr", "en-es", "es", "en-es"]
    assert round_robin_schedule({"mlm": 3, "tlm": 1}, members) == ["en", "fr", "en-es", "es"]
    assert round_robin_schedule({"mlm": 1, "tlm": 0}, members) == ["en", "fr", "es"]
    assert parse_ratio("mlm:2, tlm:1") == {"mlm": 2, "tlm": 1}
    for bad in ("mlm:x", "mlm:1,mlm:2", "mlm:0", "mlm:-1"):
        with pytest.raises(ConfigError, match="schedule"):
            parse_ratio(bad)
    with pytest.raises(ConfigError, match="'tlm' has no data source"):
        round_robin_schedule({"mlm": 1, "tlm": 1}, {"mlm": ["en"], "tlm": []})


@pytest.mark.parametrize("mlm, tlm", [(1, 1), (2, 1), (1, 3)])
def test_sampler_keeps_each_step_in_one_source_at_the_ratio(mlm, tlm):
    schedule = [NAMES.index(n) for n in round_robin_schedule({"mlm": mlm, "tlm": tlm}, {"mlm": NAMES[:3], "tlm": NAMES[3:]})]
    sampler = AlternatingBatchSampler(SIZES, schedule, batch_size=4, batches_per_step=2, seed=1, names=NAMES)
    batches = list(sampler)
    assert len(batches) == len(sampler) and all(len(b) == 4 for b in batches)
    steps = [batches[i : i + 2] for i in range(0, len(batches), 2)]
    sources = []
    for step in steps:
        step_sources = {source_of(i) for batch in step for i in batch}
        assert len(step_sources) == 1, step  # every micro-batch of a step from one stream
        sources.append(step_sources.pop())
    kinds = ["tlm" if s == 3 else "mlm" for s in sources]
    assert kinds.count("mlm") * tlm == kinds.count("tlm") * mlm  # whole cycles: the exact ratio
    assert [s for s in sources if s < 3][:6] == [0, 1, 2, 0, 1, 2]  # MLM steps rotate over languages
    for source, size in enumerate(SIZES):  # an epoch reads every stream at least once
        offset = sum(SIZES[:source])
        seen = {i for b in batches for i in b if source_of(i) == source}
        assert len(seen) >= size - size % 4 and seen <= set(range(offset, offset + size))


def test_sampler_is_seeded_per_epoch_and_resumes_by_skipping():
    schedule = [0, 3, 1, 3, 2, 3]
    a = AlternatingBatchSampler(SIZES, schedule, batch_size=4, seed=3)
    b = AlternatingBatchSampler(SIZES, schedule, batch_size=4, seed=3)
    assert list(a) == list(b)
    epoch0 = list(a)
    a.set_epoch(1)
    assert list(a) != epoch0 and sorted(map(len, a)) == sorted(map(len, epoch0))
    assert list(AlternatingBatchSampler(SIZES, schedule, batch_size=4, seed=4)) != epoch0
    # Resume mid-epoch: accelerate's skip gives exactly the rest of the epoch.
    b.set_epoch(1)
    assert list(SkipBatchSampler(b, skip_batches=7)) == list(a)[7:]
    data = ConcatDataset([list(range(sum(SIZES[:k]), sum(SIZES[: k + 1]))) for k in range(4)])
    loader = DataLoader(data, batch_sampler=b, collate_fn=list)
    assert [list(x) for x in skip_first_batches(loader, 5)] == list(a)[5:]


def test_sampler_shards_whole_steps_across_processes():
    schedule = [0, 3, 1, 3]
    sampler = AlternatingBatchSampler(SIZES, schedule, batch_size=2, batches_per_step=4, seed=0)  # 2 processes x 2 accumulation
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=p)) for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(sampler) // 2
    for k in range(0, len(shards[0]), 2):  # each process's 2 micro-batches of step k // 2
        sources = {source_of(i) for p in range(2) for batch in shards[p][k : k + 2] for i in batch}
        assert sources == {schedule[(k // 2) % len(schedule)]}


def test_interleaved_indices_take_the_sources_in_turn():
    assert interleaved_indices([3, 1, 2]) == [0, 3, 4, 1, 5, 2]
    assert sorted(interleaved_indices(SIZES)) == list(range(sum(SIZES)))


def test_sampler_rejects_a_stream_smaller_than_a_batch():
    with pytest.raises(DataError, match="tlm en-es: 3 examples, fewer than one batch of 4"):
        AlternatingBatchSampler([10, 3], [0, 1], batch_size=4, names=["mlm en", "tlm en-es"])


# --- CLM ----------------------------------------------------------------------------------------

CLM_SMALL = ["data.block_size=64", "impl.micro_batch_size=8", "train.global_batch_size=8", "eval.every=10", "eval.batches=4",
             "tokenizer.vocab_size=600", "data.validation_split=0.1", "train.max_steps=20"]


@pytest.mark.slow
def test_clm_recipe_trains_and_loads_in_text_generation_pipeline(tmp_path, wiki_jsonl):
    out = tmp_path / "clm"
    proc = run_recipe("pretrain_clm.py", f"data.train_file={wiki_jsonl}", f"output_dir={out}", *COMMON, *CLM_SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = assert_loss_falls(out, 0.6)
    assert results["steps"] == 20 and "eval_perplexity" in results

    from transformers import AutoModelForCausalLM, GPT2LMHeadModel, pipeline

    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, GPT2LMHeadModel)
    generate = pipeline("text-generation", model=str(out))
    tok = generate.tokenizer
    assert model.config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert model.config.pad_token_id == tok.pad_token_id
    text = generate("the history of the", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("the history of the") and len(text) > len("the history of the")


# --- BERT ---------------------------------------------------------------------------------------

BERT_SMALL = ["data.max_seq_length=64", "data.dupe_factor=1", "impl.micro_batch_size=16", "train.global_batch_size=16",
              "eval.every=10",
              "eval.batches=4", "tokenizer.vocab_size=1000", "data.validation_split=0.1", "train.max_steps=20"]


@pytest.mark.slow
def test_bert_recipe_trains_mlm_and_nsp_and_loads_as_bert_for_pretraining(tmp_path, wiki_jsonl):
    out = tmp_path / "bert"
    proc = run_recipe("pretrain_bert.py", f"data.train_file={wiki_jsonl}", f"output_dir={out}", *COMMON, *BERT_SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = assert_loss_falls(out, 0.6)
    assert {"eval_mlm_loss", "eval_nsp_loss", "eval_nsp_accuracy"} <= results.keys()

    from transformers import BertForMaskedLM, BertForPreTraining, pipeline

    model, info = BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.type_vocab_size == 2
    mlm, info = BertForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    torch.testing.assert_close(mlm.cls.predictions.transform.dense.weight, model.cls.predictions.transform.dense.weight)
    fill = pipeline("fill-mask", model=str(out))
    assert len(fill(f"the city is the {fill.tokenizer.mask_token} of the region.")) == 5
    tok = fill.tokenizer
    pair = tok("the river is long.", "it flows to the sea.", return_tensors="pt")
    with torch.no_grad():
        assert model(**pair).seq_relationship_logits.shape == (1, 2)


@pytest.mark.slow
def test_bert_recipe_sop_on_kjv_chapters(tmp_path):
    out = tmp_path / "sop"
    proc = run_recipe("pretrain_bert.py", "data.documents=kjv", "bert.sop=true", "data.max_train_documents=150",
                      f"output_dir={out}", *COMMON, *BERT_SMALL, "train.max_steps=12")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results, _ = results_and_history(out)
    assert results["steps"] == 12 and results["eval_nsp_loss"] < 1.0
    assert "sentence order prediction" in (out / "README.md").read_text()


# --- XLM ----------------------------------------------------------------------------------------

XLM_SMALL = ["data.max_length=48", "data.max_documents=300", "impl.micro_batch_size=16", "train.global_batch_size=16",
             "eval.every=15",
             "eval.batches=4", "tokenizer.vocab_size=800", "train.max_steps=30"]


@pytest.mark.slow
def test_xlm_recipe_alternates_mlm_and_tlm_and_loads_as_xlm_with_lm_head(tmp_path):
    out = tmp_path / "xlm"
    proc = run_recipe("pretrain_xlm.py", f"output_dir={out}", *COMMON, *XLM_SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_loss_falls(out, 0.6)

    from transformers import AutoTokenizer, XLMWithLMHeadModel

    model, info = XLMWithLMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    config = model.config
    assert config.n_langs == 3 and config.lang2id == {"en": 0, "fr": 1, "es": 2} and config.use_lang_emb
    assert not config.causal and config.mask_token_id == AutoTokenizer.from_pretrained(out).mask_token_id == 4
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("el gato", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids, langs=torch.full_like(ids, config.lang2id["es"])).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert "mlm:1,tlm:1" in (out / "README.md").read_text()


@pytest.mark.slow
def test_xlm_recipe_resumes_mid_epoch_on_the_same_schedule(tmp_path):
    import shutil

    from safetensors.torch import load_file

    # No dropout: as in test_recipe_mlm, the dropout RNG is not part of what a resume restores exactly.
    args = [*COMMON, *XLM_SMALL, "train.max_steps=8", "save.every=4", "eval.every=100", "tokenizer.vocab_size=400",
            "model.config_overrides={dropout: 0.0, attention_dropout: 0.0}"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    proc = run_recipe("pretrain_xlm.py", f"output_dir={straight}", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(straight / "checkpoints" / "step_00000004", resumed / "checkpoints" / "step_00000004")
    proc = run_recipe("pretrain_xlm.py", f"output_dir={resumed}", *args, "resume=auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr
    a, b = (load_file(str(d / "model.safetensors")) for d in (straight, resumed))
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_xlm_recipe_causal_objective_on_monolingual_streams(tmp_path):
    out = tmp_path / "xlm_clm"
    proc = run_recipe("pretrain_xlm.py", f"output_dir={out}", "xlm.objective=clm", "data.languages=[en,fr]",
                      *COMMON, *XLM_SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_loss_falls(out, 0.6)

    from transformers import XLMWithLMHeadModel

    model = XLMWithLMHeadModel.from_pretrained(out)
    assert model.config.causal and model.config.lang2id == {"en": 0, "fr": 1}


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, expected",
    [
        ("pair_missing_language", "language 'es' missing (the row has ['en'])"),
        ("unknown_language", "no built-in monolingual corpus for language 'xx'"),
        ("bad_direction", "data.pairs: 'en' is not a translation direction like 'en-es'"),
        ("no_multi_sentence", "NSP needs documents of several sentences"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(tmp_path, case, expected):
    out = tmp_path / "out"
    if case == "no_multi_sentence":
        rows = [{"text": f"This is sentence number {i} about the old city"} for i in range(60)]
        args = ["pretrain_bert.py", f"data.train_file={write_jsonl(tmp_path / 'docs.jsonl', rows)}", *BERT_SMALL]
    else:
        rows = [{"translation": {"en": f"the word {i}", "es": f"la palabra {i}"}} for i in range(40)]
        rows[7] = {"translation": {"en": "the cat"}}
        pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
        extra = {
            "pair_missing_language": ["data.languages=[en]", f"data.pairs_file={pairs}", "data.max_documents=40"],
            "unknown_language": ["data.languages=[en,xx]"],
            "bad_direction": ["data.pairs=[en]"],
        }[case]
        args = ["pretrain_xlm.py", *XLM_SMALL, *extra]
    proc = run_recipe(*args, f"output_dir={out}", *COMMON, "train.max_steps=2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, last
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints").exists()


def test_tlm_collator_causal_mode_predicts_every_token_unmasked(tmp_path):
    from nlp_ssl.objectives import TLMCollator
    from nlp_ssl.text.tokenizers import train_tokenizer
    from tests.helpers import toy_texts

    tok = train_tokenizer("bpe", toy_texts(100), 200, tmp_path / "bpe")
    rows = [{"src_ids": [10, 11, 12], "tgt_ids": [], "src_lang": "fr", "tgt_lang": ""},
            {"src_ids": [13], "tgt_ids": [], "src_lang": "en", "tgt_lang": ""}]
    batch = TLMCollator(tok, {"en": 0, "fr": 1}, causal=True)(rows)
    eos = tok.eos_token_id
    assert batch["input_ids"].tolist() == [[eos, 10, 11, 12, eos], [eos, 13, eos, tok.pad_token_id, tok.pad_token_id]]
    assert batch["labels"].tolist() == [[eos, 10, 11, 12, eos], [eos, 13, eos, -100, -100]]
    assert batch["langs"].tolist() == [[1] * 5, [0] * 5]
