"""Continued pretraining from a checkpoint (nlp_ssl.models.continued, tokenizer_setup, data.text's extra files,
recipes/configs/pretrain_*_continue.yaml): the tokenizer follows the checkpoint, a missing head is created, tied
and reported, a tokenizer that does not fit is one line, whole-word masking works with the checkpoint's WordPiece."""

import json
import logging
import shutil

import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
)

from nlp_ssl.data.text import TextDataConfig, load_text_splits, tokenize_and_pack
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.models import ModelConfig
from nlp_ssl.models.continued import build_pretraining_model
from nlp_ssl.objectives import MLMCollator
from nlp_ssl.text.tokenizers import TokenizerConfig, load_or_train_tokenizer
from tests.helpers import ROOT, run_recipe, toy_texts, write_jsonl

TOKENIZERS = ROOT / "tests" / "data" / "tokenizers"
ENV = {"OMP_NUM_THREADS": "1"}


def bert_config(vocab_size: int, **fields) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, **fields)


def save_checkpoint(folder, model, tokenizer_dir=TOKENIZERS / "wordpiece"):
    """``model`` saved as a checkpoint folder, with the tokenizer of ``tokenizer_dir`` (None: without one)."""
    model.save_pretrained(folder)
    if tokenizer_dir is not None:
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture
def encoder_only(tmp_path):
    """A BERT encoder saved without its MLM head, as sentence encoders (all-MiniLM-L6-v2) are."""
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "encoder", BertModel(bert_config(1000)))


# ------------------------------------------------------------------------------ the tokenizer


def test_the_tokenizer_follows_the_checkpoint_and_an_explicit_one_wins(encoder_only):
    own = load_or_train_tokenizer(TokenizerConfig(), None, "text", model=ModelConfig(name_or_path=str(encoder_only)))
    assert own.name_or_path == str(encoder_only)
    assert own.get_vocab() == AutoTokenizer.from_pretrained(TOKENIZERS / "wordpiece").get_vocab()
    given = load_or_train_tokenizer(TokenizerConfig(name_or_path=str(TOKENIZERS / "bpe")), None, "text",
                                    model=ModelConfig(name_or_path=str(encoder_only)))
    assert given.get_vocab() == AutoTokenizer.from_pretrained(TOKENIZERS / "bpe").get_vocab() != own.get_vocab()


def test_a_checkpoint_without_a_tokenizer_is_one_line_and_a_config_folder_trains_one(tmp_path, encoder_only):
    bare = tmp_path / "bare"
    shutil.copytree(encoder_only, bare)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    with pytest.raises(ConfigError, match=f"^model.name_or_path {bare}: the checkpoint has no tokenizer; set tokenizer"):
        load_or_train_tokenizer(TokenizerConfig(), None, "text", model=ModelConfig(name_or_path=str(bare)))
    # Fresh weights (a config only, or load_weights=false): no checkpoint ids to follow, so one is trained.
    from datasets import Dataset

    texts = Dataset.from_dict({"text": toy_texts(50)})
    trained = load_or_train_tokenizer(TokenizerConfig(vocab_size=90), texts, "text", cache_dir=str(tmp_path / "cache"),
                                      model=ModelConfig(name_or_path=str(bare), load_weights=False))
    assert 60 <= len(trained) <= 90 and str(tmp_path / "cache") in trained.name_or_path


# ---------------------------------------------------------------------- head creation and tying


def test_a_missing_mlm_head_is_created_tied_and_reported_and_the_encoder_is_loaded(encoder_only, caplog):
    tok = AutoTokenizer.from_pretrained(encoder_only)
    with caplog.at_level(logging.INFO, logger="nlp_ssl.models"):
        model = build_pretraining_model(ModelConfig(name_or_path=str(encoder_only)), "masked_lm", tok)
    assert isinstance(model, BertForMaskedLM)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    saved = BertModel.from_pretrained(encoder_only).state_dict()
    loaded = model.bert.state_dict()
    assert all(torch.equal(loaded[name], saved[name]) for name in loaded)
    lines = [r.getMessage() for r in caplog.records if r.name == "nlp_ssl.models"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"model.name_or_path {encoder_only}: no complete masked_lm head in the checkpoint; "
                               "newly initialised: ")
    assert "cls.predictions.transform.dense.weight" in lines[0]
    assert "tied to the input embeddings (bert.embeddings.word_embeddings.weight)" in lines[0]
    assert "not used (and not saved) by this head: pooler.dense.bias, pooler.dense.weight" in lines[0]


def test_a_checkpoint_with_its_head_keeps_it_and_an_untied_config_stays_untied(tmp_path, caplog):
    torch.manual_seed(1)
    with_head = save_checkpoint(tmp_path / "mlm", BertForMaskedLM(bert_config(1000)))
    tok = AutoTokenizer.from_pretrained(with_head)
    with caplog.at_level(logging.INFO, logger="nlp_ssl.models"):
        model = build_pretraining_model(ModelConfig(name_or_path=str(with_head)), "masked_lm", tok)
    saved = BertForMaskedLM.from_pretrained(with_head).state_dict()
    assert all(torch.equal(value, saved[name]) for name, value in model.state_dict().items())
    assert caplog.records[-1].getMessage() == (
        f"model.name_or_path {with_head}: loaded with its own masked_lm head; "
        "its output projection is tied to the input embeddings (bert.embeddings.word_embeddings.weight)"
    )
    untied = save_checkpoint(tmp_path / "untied", BertModel(bert_config(1000, tie_word_embeddings=False)))
    with caplog.at_level(logging.INFO, logger="nlp_ssl.models"):
        model = build_pretraining_model(ModelConfig(name_or_path=str(untied)), "masked_lm", tok)
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert "cls.predictions.decoder.weight" in caplog.records[-1].getMessage()
    assert "not tied to the input embeddings (the config unties them)" in caplog.records[-1].getMessage()


def test_a_gpt2_without_its_lm_head_gets_one_tied_for_continued_clm(tmp_path):
    torch.manual_seed(2)
    config = GPT2Config(vocab_size=600, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    folder = save_checkpoint(tmp_path / "gpt2", GPT2Model(config), TOKENIZERS / "bytelevel_bpe")
    model = build_pretraining_model(ModelConfig(name_or_path=str(folder)), "causal_lm", AutoTokenizer.from_pretrained(folder))
    assert isinstance(model, GPT2LMHeadModel)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert torch.equal(model.transformer.wte.weight, GPT2Model.from_pretrained(folder).wte.weight)


@pytest.mark.parametrize("tokenizer, size", [("bpe", 800), ("bytelevel_bpe", 600)])
def test_a_tokenizer_that_does_not_fit_the_embeddings_is_one_line_naming_both_sizes(encoder_only, tokenizer, size):
    other = AutoTokenizer.from_pretrained(TOKENIZERS / tokenizer)
    with pytest.raises(ConfigError) as error:
        build_pretraining_model(ModelConfig(name_or_path=str(encoder_only)), "masked_lm", other)
    assert str(error.value) == (
        f"tokenizer {TOKENIZERS / tokenizer} has {size:,} tokens but model.name_or_path {encoder_only} has 1,000 embedding "
        "rows: its ids would address the wrong embeddings; leave tokenizer.name_or_path unset to use the checkpoint's own"
    )


def test_a_checkpoints_own_tokenizer_may_be_smaller_than_its_padded_embeddings(tmp_path):
    folder = save_checkpoint(tmp_path / "padded", BertModel(bert_config(1024)))  # 1,000 tokens, 1,024 rows
    model = build_pretraining_model(ModelConfig(name_or_path=str(folder)), "masked_lm", AutoTokenizer.from_pretrained(folder))
    assert model.get_input_embeddings().num_embeddings == 1024


def test_a_fresh_model_takes_the_tokenizers_size():
    tok = AutoTokenizer.from_pretrained(TOKENIZERS / "wordpiece")
    model = build_pretraining_model(ModelConfig(arch="bert", size="tiny"), "masked_lm", tok, pad_token_id=tok.pad_token_id)
    assert model.get_input_embeddings().num_embeddings == len(tok) == 1000


# ------------------------------------------------------------ whole words and task-adaptive data


def test_whole_word_masking_masks_every_wordpiece_of_a_word_with_the_checkpoints_tokenizer(encoder_only):
    from datasets import Dataset

    tok = load_or_train_tokenizer(TokenizerConfig(), None, "text", model=ModelConfig(name_or_path=str(encoder_only)))
    docs = Dataset.from_dict({"text": ["the mountains flowing quietly toward distant rivers"] * 8})
    blocks = tokenize_and_pack(docs, tok, "text", 32, word_ids=True)
    batch = MLMCollator(tok, mlm_probability=0.4, whole_word_mask=True, seed=3)(list(blocks))
    pieces = 0
    for row, words in enumerate(blocks["word_ids"]):
        labels = batch["labels"][row, : len(words)]
        for word in set(words) - {-1}:
            at = [i for i, w in enumerate(words) if w == word]
            masked = {bool(labels[i] != -100) for i in at}
            assert len(masked) == 1, (row, word)  # all pieces of a word, or none
            pieces += len(at) > 1 and masked == {True}
    assert pieces > 0  # some multi-piece ("##") word was masked whole


def test_extra_train_files_join_the_pool_texts_whatever_their_format(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"body": f"labelled text {i}", "label": i % 2} for i in range(30)])
    extra_txt = tmp_path / "more.txt"
    extra_txt.write_text("".join(f"plain line {i}\n" for i in range(10)))
    extra_csv = tmp_path / "more.csv"
    extra_csv.write_text("body,other\n" + "".join(f"csv text {i},{i}\n" for i in range(10)))
    cfg = TextDataConfig(train_file=str(pool), text_column="body", extra_train_files=[str(extra_txt), str(extra_csv)],
                         validation_split=0.1)
    splits = load_text_splits(cfg, seed=0)
    texts = splits["train"]["body"][:] + splits["validation"]["body"][:]
    assert sorted(texts) == sorted([f"labelled text {i}" for i in range(30)] + [f"plain line {i}" for i in range(10)]
                                   + [f"csv text {i}" for i in range(10)])
    assert splits["train"].column_names == ["body"] and len(splits["validation"]) == 5


@pytest.mark.parametrize("case, message", [
    ("missing", "data.extra_train_files[0] {missing}: file does not exist"),
    ("streaming", "data.extra_train_files: not supported with data.streaming=true"),
])
def test_bad_extra_train_files_are_one_line(tmp_path, case, message):
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": f"text {i}"} for i in range(30)])
    missing = tmp_path / "missing.txt"
    with pytest.raises((ConfigError, DataError)) as error:
        cfg = TextDataConfig(train_file=str(pool), extra_train_files=[str(missing)], streaming=case == "streaming")
        load_text_splits(cfg)
    assert str(error.value).startswith(message.format(missing=missing))


# --------------------------------------------------------------------------- recipes, end to end


@pytest.mark.slow
def test_pretrain_mlm_on_minilm_needs_one_flag_and_loads_in_fill_mask(tmp_path, wiki_jsonl):
    """The pip MiniLM (a bare BertModel): its tokenizer, a fresh tied MLM head, whole-word masking, fill-mask."""
    from transformers import AutoModelForMaskedLM, pipeline

    from nlp_ssl.data.minilm import minilm_checkpoint

    out = tmp_path / "run"
    proc = run_recipe("pretrain_mlm.py", f"model.name_or_path={minilm_checkpoint()}", f"data.train_file={wiki_jsonl}",
                      f"output_dir={out}", "train.max_steps=2", "data.block_size=32", "impl.micro_batch_size=4",
                      "train.global_batch_size=4",
                      "eval.batches=2", "mlm.whole_word_mask=true", "log.progress_bar=false", "log.report_to=[]",
                      "data.max_train_documents=100", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no complete masked_lm head in the checkpoint; newly initialised: cls.predictions.bias" in proc.stderr
    assert "learning_rate 0.002 is a from-scratch rate" in proc.stderr  # the from-scratch yaml was used
    assert not (out / "vocab.txt").exists() or len(AutoTokenizer.from_pretrained(out)) == 30522
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(minilm_checkpoint()).get_vocab()
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    fill = pipeline("fill-mask", model=str(out))
    predictions = fill("paris is the capital of [MASK].")
    assert len(predictions) == 5 and all(p["sequence"].startswith("paris is the capital of") for p in predictions)


@pytest.mark.slow
def test_the_continue_configs_load_a_checkpoint_and_run_a_few_steps(tmp_path, encoder_only, wiki_jsonl):
    out = tmp_path / "mlm"
    proc = run_recipe("pretrain_mlm.py", "--config", str(ROOT / "recipes/configs/pretrain_mlm_continue.yaml"),
                      f"model.name_or_path={encoder_only}", f"data.train_file={wiki_jsonl}", f"output_dir={out}",
                      "train.max_steps=3", "eval.every=3", "data.block_size=32", "impl.micro_batch_size=8",
                      "train.global_batch_size=8",
                      "log.progress_bar=false", "log.report_to=[]", "data.max_train_documents=60", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "from-scratch rate" not in proc.stderr
    assert json.loads((out / "all_results.json").read_text())["steps"] == 3
    card = (out / "README.md").read_text()  # the model card holds the run's config: the continue yaml's settings
    assert "\n  learning_rate: 3.0e-05\n" in card and "mlm_probability: 0.15" in card
    assert len(AutoTokenizer.from_pretrained(out)) == 1000  # the checkpoint's, not a trained one

    torch.manual_seed(2)
    gpt2 = save_checkpoint(tmp_path / "gpt2", GPT2LMHeadModel(GPT2Config(vocab_size=600, n_embd=32, n_layer=1, n_head=2,
                                                                        n_positions=64)), TOKENIZERS / "bytelevel_bpe")
    out = tmp_path / "clm"
    proc = run_recipe("pretrain_clm.py", "--config", str(ROOT / "recipes/configs/pretrain_clm_continue.yaml"),
                      f"model.name_or_path={gpt2}", f"data.train_file={wiki_jsonl}", f"output_dir={out}", "train.max_steps=3",
                      "eval.every=3", "data.block_size=32", "impl.micro_batch_size=8", "train.global_batch_size=8",
                      "log.progress_bar=false", "log.report_to=[]", "data.max_train_documents=60", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "all_results.json").read_text())["steps"] == 3
    assert "loaded with its own causal_lm head" in proc.stderr


@pytest.mark.slow
def test_a_mismatched_tokenizer_is_one_line_and_exit_2(tmp_path, encoder_only, wiki_jsonl):
    out = tmp_path / "out"
    proc = run_recipe("pretrain_mlm.py", f"model.name_or_path={encoder_only}",
                      f"tokenizer.name_or_path={TOKENIZERS / 'bytelevel_bpe'}", f"data.train_file={wiki_jsonl}",
                      f"output_dir={out}", "train.max_steps=2", "log.progress_bar=false", env=ENV)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: tokenizer ") and "has 600 tokens but model.name_or_path" in last
    assert "1,000 embedding rows" in last
    assert "Traceback" not in proc.stderr
    assert not (out / "model.safetensors").exists()
