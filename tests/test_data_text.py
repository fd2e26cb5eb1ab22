"""Loading text from every kind of source, packing into blocks, and the checks on bad files."""

import json

import pandas as pd
import pytest
from datasets import Dataset, IterableDataset

from nlp_ssl.data.text import TextDataConfig, load_text_splits, special_frame, tokenize_and_pack
from nlp_ssl.errors import DataError
from tests.helpers import toy_texts


@pytest.fixture
def texts():
    return toy_texts(60, seed=9)


def write_all_formats(tmp_path, texts):
    (tmp_path / "c.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame({"text": texts}).to_parquet(tmp_path / "c.parquet")
    Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "saved"))


def test_every_local_format_gives_the_same_texts_and_a_validation_split(tmp_path, texts):
    write_all_formats(tmp_path, texts)
    for source in ("c.txt", "c.jsonl", "c.csv", "c.parquet"):
        splits = load_text_splits(TextDataConfig(train_file=str(tmp_path / source), validation_split=0.1), seed=0)
        assert len(splits["validation"]) == 6 and len(splits["train"]) == 54, source
        assert sorted(list(splits["train"]["text"]) + list(splits["validation"]["text"])) == sorted(texts), source
    saved = load_text_splits(TextDataConfig(source=str(tmp_path / "saved"), validation_split=0.1), seed=0)
    assert sorted(list(saved["train"]["text"]) + list(saved["validation"]["text"])) == sorted(texts)
    explicit = load_text_splits(TextDataConfig(train_file=str(tmp_path / "c.jsonl"), validation_file=str(tmp_path / "c.csv")))
    assert len(explicit["train"]) == 60 and len(explicit["validation"]) == 60


def test_split_is_seeded(tmp_path, texts):
    write_all_formats(tmp_path, texts)
    cfg = TextDataConfig(train_file=str(tmp_path / "c.jsonl"), validation_split=0.2)
    assert list(load_text_splits(cfg, seed=1)["validation"]["text"]) == list(load_text_splits(cfg, seed=1)["validation"]["text"])
    assert list(load_text_splits(cfg, seed=1)["validation"]["text"]) != list(load_text_splits(cfg, seed=2)["validation"]["text"])


def test_blocks_are_full_framed_and_keep_every_token_in_order(wordpiece_tokenizer, texts):
    tok = wordpiece_tokenizer
    ds = Dataset.from_dict({"text": texts})
    blocks = tokenize_and_pack(ds, tok, "text", 32, word_ids=True)
    prefix, suffix = special_frame(tok)
    assert (prefix, suffix) == ([tok.cls_token_id], [tok.sep_token_id])
    stream = []
    for row in blocks:
        assert len(row["input_ids"]) == 32 and len(row["word_ids"]) == 32
        assert row["input_ids"][0] == tok.cls_token_id and row["input_ids"][-1] == tok.sep_token_id
        stream.extend(row["input_ids"][1:-1])
    expected = []
    for t in texts:
        expected.extend(tok(t, add_special_tokens=False)["input_ids"] + [tok.sep_token_id])
    assert stream == expected[: len(stream)] and len(expected) - len(stream) < 30


def test_packing_is_cached_between_runs(tmp_path, wordpiece_tokenizer, texts):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    cfg = TextDataConfig(train_file=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "hf"))
    first = tokenize_and_pack(load_text_splits(cfg)["train"], wordpiece_tokenizer, "text", 32)
    second = tokenize_and_pack(load_text_splits(cfg)["train"], wordpiece_tokenizer, "text", 32)
    assert first.cache_files and first.cache_files == second.cache_files
    assert first._fingerprint == second._fingerprint


def test_streaming_gives_iterable_splits(tmp_path, wordpiece_tokenizer, texts):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    cfg = TextDataConfig(train_file=str(tmp_path / "c.jsonl"), streaming=True, streaming_validation_documents=10)
    splits = load_text_splits(cfg, seed=0)
    assert isinstance(splits["train"], IterableDataset)
    assert len(list(splits["validation"])) == 10 and len(list(splits["train"])) == 50
    blocks = list(tokenize_and_pack(splits["train"], wordpiece_tokenizer, "text", 32))
    assert blocks and all(len(b["input_ids"]) == 32 for b in blocks)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("e.jsonl", b"", "file is empty"),
        ("w.txt", b"  \n\n", "file is empty (only whitespace)"),
        ("u.txt", b"ok\nstill ok\n\xc3\x28 broken\n", "line 3: not valid UTF-8 (byte 0xc3)"),
        ("c.csv", b"body\nhello\n", "no column 'text' (columns: body)"),
        ("m.csv", b"text,n\nhello,1\n,2\n", "line 3: field 'text' is empty"),
        ("x.xml", b"<a/>", "unsupported extension '.xml'"),
    ],
)
def test_bad_files_are_named_with_line_and_field(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_text_splits(TextDataConfig(train_file=str(path)))
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_file_and_unknown_builtin(tmp_path):
    with pytest.raises(DataError, match="file does not exist"):
        load_text_splits(TextDataConfig(train_file=str(tmp_path / "nope.jsonl")))
    with pytest.raises(DataError, match="unknown built-in corpus"):
        load_text_splits(TextDataConfig(source="builtin:nope"))
