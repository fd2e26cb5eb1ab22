"""Get the run's tokenizer: a given one, or one trained on the training texts and cached."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer

from nlp_ssl.data.cache import cache_root
from nlp_ssl.tokenization import train_tokenizer


@dataclass
class TokenizerConfig:
    #: A tokenizer folder or Hub name; empty: train one on the training texts (cached).
    name_or_path: str | None = None
    kind: str = "wordpiece"
    vocab_size: int = 8192
    lowercase: bool = True


def load_or_train_tokenizer(cfg: TokenizerConfig, texts_dataset, text_column: str, cache_dir: str | None = None):
    """``cfg.name_or_path`` if set; else a ``cfg.kind`` tokenizer trained once per corpus and settings."""
    if cfg.name_or_path:
        return AutoTokenizer.from_pretrained(cfg.name_or_path)
    fingerprint = getattr(texts_dataset, "_fingerprint", None) or str(len(texts_dataset))
    key = hashlib.sha256(f"{cfg.kind}|{cfg.vocab_size}|{cfg.lowercase}|{fingerprint}|{text_column}".encode()).hexdigest()[:16]
    folder = cache_root(cache_dir) / "tokenizers" / f"{cfg.kind}-{cfg.vocab_size}-{key}"
    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    texts = (row[text_column] for row in texts_dataset)
    return train_tokenizer(cfg.kind, texts, cfg.vocab_size, Path(folder), lowercase=cfg.lowercase)
