"""Get the run's tokenizer: a given one, or one trained on the training texts and cached."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from datasets import IterableDataset
from transformers import AutoTokenizer

from nlp_ssl.config import check_ranges
from nlp_ssl.data.cache import cache_root
from nlp_ssl.tokenization import train_tokenizer


@dataclass
class TokenizerConfig:
    #: A tokenizer folder or Hub name; empty: train one on the training texts (cached).
    name_or_path: str | None = None
    kind: str = "wordpiece"
    vocab_size: int = 8192
    lowercase: bool = True
    #: Documents the tokenizer is trained on (the first ones of a streamed corpus).
    max_training_documents: int = 200_000

    def __post_init__(self):
        check_ranges(self, vocab_size="(0, inf)", max_training_documents="(0, inf)")


def load_or_train_tokenizer(cfg: TokenizerConfig, texts_dataset, text_column: str, cache_dir: str | None = None):
    """``cfg.name_or_path`` if set; else a ``cfg.kind`` tokenizer trained once per corpus and settings."""
    if cfg.name_or_path:
        return AutoTokenizer.from_pretrained(cfg.name_or_path)
    if isinstance(texts_dataset, IterableDataset):
        texts_dataset = texts_dataset.take(cfg.max_training_documents)
        # A stream has no fingerprint: identify it by the text of its first documents.
        fingerprint = hashlib.sha256("\x00".join(r[text_column] for r in texts_dataset.take(1000)).encode()).hexdigest()
    else:
        texts_dataset = texts_dataset.select(range(min(cfg.max_training_documents, len(texts_dataset))))
        fingerprint = texts_dataset._fingerprint
    settings = f"{cfg.kind}|{cfg.vocab_size}|{cfg.lowercase}|{fingerprint}|{text_column}"
    folder = (cache_root(cache_dir) / "tokenizers"
              / f"{cfg.kind}-{cfg.vocab_size}-{hashlib.sha256(settings.encode()).hexdigest()[:16]}")
    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    texts = (row[text_column] for row in texts_dataset)
    return train_tokenizer(cfg.kind, texts, cfg.vocab_size, Path(folder), lowercase=cfg.lowercase)
