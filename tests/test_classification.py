"""Sentence pairs and regression in tasks/classification.py: the pair layout of each model family,
token by token, and the regression loss."""

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig, build_model, special_token_fields
from nlp_ssl.objectives.text_classification import ClassificationCollator
from nlp_ssl.tasks.classification import SequenceClassificationTask
from nlp_ssl.text.pairs import GPT1_TOKENS, prepare_pair_layout, tokenize_texts
from nlp_ssl.text.text_finetuning import uses_token_types
from tests.helpers import toy_texts

A = "the cat sat on a mat"
B = "two dogs ran"


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    """A WordPiece tokenizer whose vocabulary holds every toy word whole, so tokens read as words."""
    from nlp_ssl.text.tokenizers import train_tokenizer

    return train_tokenizer("wordpiece", toy_texts(300), 400, tmp_path_factory.mktemp("wp") / "tok")


def words(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(ids)


def test_bert_pair_is_cls_a_sep_b_sep_with_segment_ids(wordpiece):
    tok = wordpiece
    enc = tokenize_texts(tok, [A], [B], max_length=64)
    assert words(tok, enc["input_ids"][0]) == ["[CLS]", *A.split(), "[SEP]", *B.split(), "[SEP]"]
    assert enc["token_type_ids"][0] == [0] * 8 + [1] * 4
    bert = build_model(ModelConfig(arch="bert", size="tiny"), "sequence_classification", vocab_size=len(tok), num_labels=2)
    assert uses_token_types(bert.config)


def test_truncation_cuts_the_longer_side_first(wordpiece):
    tok = wordpiece
    # 10 positions, 3 of them special: the 6-word side loses 2 words, the 3-word side none.
    enc = tokenize_texts(tok, [A], [B], max_length=10)
    assert words(tok, enc["input_ids"][0]) == ["[CLS]", "the", "cat", "sat", "on", "[SEP]", *B.split(), "[SEP]"]
    assert enc["token_type_ids"][0] == [0] * 6 + [1] * 4
    # The same with the long side second.
    enc = tokenize_texts(tok, [B], [A], max_length=10)
    assert words(tok, enc["input_ids"][0]) == ["[CLS]", *B.split(), "[SEP]", "the", "cat", "sat", "on", "[SEP]"]
    # When both are too long they end up within one token of each other.
    enc = tokenize_texts(tok, [A], [B], max_length=7)
    tokens = words(tok, enc["input_ids"][0])
    first, second = tokens[1 : tokens.index("[SEP]")], tokens[tokens.index("[SEP]") + 1 : -1]
    assert first == A.split()[:2] and second == B.split()[:2] and len(tokens) == 7


def test_modernbert_pair_uses_separators_and_no_segment_ids(wordpiece):
    import datasets

    from nlp_ssl.text.text_finetuning import tokenize

    tok = wordpiece
    model = build_model(ModelConfig(arch="modernbert", size="tiny"), "sequence_classification", vocab_size=len(tok),
                        num_labels=3, **special_token_fields(tok))
    assert not uses_token_types(model.config)
    assert prepare_pair_layout(tok, model.config) is False  # encoders keep their own template
    ds = datasets.Dataset.from_dict({"text": [A, B], "text_pair": [B, A], "label": [0, 2]})
    out = tokenize(ds, tok, 64, keep_token_types=uses_token_types(model.config))
    assert out.column_names == ["input_ids", "label"]
    assert words(tok, out[0]["input_ids"]) == ["[CLS]", *A.split(), "[SEP]", *B.split(), "[SEP]"]
    assert out[0]["input_ids"][0] == model.config.cls_token_id and out[0]["input_ids"][-1] == model.config.sep_token_id
    batch = ClassificationCollator(tok)(list(out))
    assert "token_type_ids" not in batch
    assert model(**{k: v for k, v in batch.items() if k != "labels"}).logits.shape == (2, 3)


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory):
    from nlp_ssl.text.tokenizers import train_tokenizer

    return train_tokenizer("bytelevel_bpe", toy_texts(300), 400, tmp_path_factory.mktemp("bpe") / "tok")


def test_gpt2_pair_is_gpt1_start_delim_extract_and_the_classifier_reads_extract(bpe_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bpe_tokenizer.name_or_path)
    tok.pad_token = tok.eos_token  # as GPT-2 is padded
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64, num_labels=2,
                        pad_token_id=tok.pad_token_id)
    assert prepare_pair_layout(tok, config) is True
    start, delim, extract = (tok.convert_tokens_to_ids(t) for t in GPT1_TOKENS)
    assert len({start, delim, extract, tok.pad_token_id}) == 4 and len(tok) == config.vocab_size + 3
    a_ids, b_ids = tok(A)["input_ids"], tok(B)["input_ids"]  # single texts: <|start|> a <|extract|>
    assert a_ids[0] == start and a_ids[-1] == extract and b_ids[0] == start and b_ids[-1] == extract
    enc = tokenize_texts(tok, [A], [B], max_length=64)
    assert enc["input_ids"][0] == [start, *a_ids[1:-1], delim, *b_ids[1:-1], extract]
    assert "token_type_ids" not in enc or not uses_token_types(config)
    # Truncation keeps the layout and cuts the longer side first.
    a_body, b_body = a_ids[1:-1], b_ids[1:-1]
    assert len(a_body) > len(b_body) + 1
    short = tokenize_texts(tok, [A], [B], max_length=3 + 2 * len(b_body) + 1)["input_ids"][0]
    assert short == [start, *a_body[: len(b_body) + 1], delim, *b_body, extract]
    # The layout is saved with the tokenizer (pipeline() on the saved folder uses it).
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again(A, B)["input_ids"] == enc["input_ids"][0]

    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config).eval()
    model.resize_token_embeddings(len(tok))
    examples = [{"input_ids": ids, "label": 1} for ids in tokenize_texts(tok, [A, B], [B, "two"], 64)["input_ids"]]
    batch = ClassificationCollator(tok)(examples)
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum(), "the test needs padding"
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        hidden = model.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    ends = batch["attention_mask"].sum(1) - 1
    assert (batch["input_ids"][torch.arange(2), ends] == extract).all()
    torch.testing.assert_close(logits, model.score(hidden[torch.arange(2), ends]))


def test_regression_loss_is_the_summed_squared_error(wordpiece):
    tok = wordpiece
    model = build_model(ModelConfig(arch="bert", size="tiny"), "sequence_classification", vocab_size=len(tok), num_labels=1,
                        pad_token_id=tok.pad_token_id).eval()
    task = SequenceClassificationTask(model, regression=True)
    enc = tokenize_texts(tok, [A, B, A], [B, A, A], 32)
    examples = [{"input_ids": i, "token_type_ids": t, "label": y}
                for i, t, y in zip(enc["input_ids"], enc["token_type_ids"], [0.5, 4.2, 5.0])]
    batch = ClassificationCollator(tok, regression=True)(examples)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == pytest.approx([0.5, 4.2, 5.0])
    assert (batch["token_type_ids"][0] == 1).any()
    with torch.no_grad():
        out = task(**batch)
        preds = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"]).logits[:, 0]
    loss, count = out["losses"]["cls"]
    assert count == 3 == task.count_items(batch)["cls"]
    torch.testing.assert_close(loss, ((preds - batch["labels"]) ** 2).sum())
    torch.testing.assert_close(out["metrics"]["mse"][0], loss)
    with pytest.raises(ConfigError, match="one-output head"):
        SequenceClassificationTask(build_model(ModelConfig(arch="bert", size="tiny"), "sequence_classification",
                                               vocab_size=len(tok), num_labels=3), regression=True)
