import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def wordpiece_tokenizer(tmp_path_factory):
    from nlp_ssl.tokenization import train_tokenizer
    from tests.helpers import toy_texts

    return train_tokenizer("wordpiece", toy_texts(300), 120, tmp_path_factory.mktemp("tok") / "wordpiece")


@pytest.fixture(scope="session")
def wiki_jsonl(tmp_path_factory) -> Path:
    """600 real English documents from the built-in corpus, as a local jsonl file."""
    from nlp_ssl.data.wiki import load_wiki_corpus
    from tests.helpers import write_jsonl

    corpus = load_wiki_corpus()["en_train"].select(range(600))
    return write_jsonl(tmp_path_factory.mktemp("wiki") / "train.jsonl", [{"text": t} for t in corpus["text"]])
