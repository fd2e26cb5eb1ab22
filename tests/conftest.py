import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def wordpiece_tokenizer(tmp_path_factory):
    from nlp_ssl.text.tokenizers import train_tokenizer
    from tests.helpers import toy_texts

    return train_tokenizer("wordpiece", toy_texts(300), 120, tmp_path_factory.mktemp("tok") / "wordpiece")


@pytest.fixture(scope="session")
def wiki_jsonl(tmp_path_factory) -> Path:
    """600 real English documents from the built-in corpus, as a local jsonl file."""
    from nlp_ssl.data.wiki import load_wiki_corpus
    from tests.helpers import write_jsonl

    corpus = load_wiki_corpus()["en_train"].select(range(600))
    return write_jsonl(tmp_path_factory.mktemp("wiki") / "train.jsonl", [{"text": t} for t in corpus["text"]])


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons and a run sets torch's thread count: an in-process
    trainer test starts and ends clean (modules opt in with ``pytestmark``)."""
    import torch
    from accelerate.state import AcceleratorState, GradientState

    def reset():
        AcceleratorState._reset_state(True)
        GradientState._reset_state()

    threads = torch.get_num_threads()
    reset()
    yield
    torch.set_num_threads(threads)
    reset()


@pytest.fixture(scope="session")
def toy_mlm_blocks(wordpiece_tokenizer):
    """(train, validation) packed 32-token blocks of toy text, for in-process trainer tests."""
    from datasets import Dataset

    from nlp_ssl.data.text import tokenize_and_pack
    from tests.helpers import toy_texts

    blocks = tokenize_and_pack(Dataset.from_dict({"text": toy_texts(300, seed=4)}), wordpiece_tokenizer, "text", 32)
    return blocks.select(range(128)), blocks.select(range(128, 160))
