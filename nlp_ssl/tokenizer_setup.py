"""Get the run's tokenizer: a given one, the checkpoint's own, or one trained on the training texts and cached."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from datasets import IterableDataset
from transformers import AutoTokenizer

from nlp_ssl.config import check_ranges
from nlp_ssl.data.cache import cache_root
from nlp_ssl.errors import ConfigError
from nlp_ssl.models.builders import ModelConfig, loads_checkpoint, resolve_model_path
from nlp_ssl.tokenization import check_kind, train_tokenizer


@dataclass
class TokenizerConfig:
    #: A tokenizer folder or Hub name; empty: the one of ``model.name_or_path`` when it has one,
    #: else one trained on the training texts (cached).
    name_or_path: str | None = None
    kind: str = "wordpiece"
    vocab_size: int = 8192
    lowercase: bool = True
    #: Documents the tokenizer is trained on (the first ones of a streamed corpus).
    max_training_documents: int = 200_000

    def __post_init__(self):
        check_ranges(self, vocab_size="(0, inf)", max_training_documents="(0, inf)")
        check_kind(self.kind)


#: Files that make a folder a tokenizer folder (fast, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


def _load(source: str, key: str):
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{key} {source}: no tokenizer could be loaded ({str(error).splitlines()[0][:200]})") from None


def has_tokenizer(path: str) -> bool:
    """A local folder holding tokenizer files, or a Hub name (whose files are checked when loaded)."""
    folder = Path(path)
    return not folder.exists() or any((folder / name).is_file() for name in TOKENIZER_FILES)


def load_or_train_tokenizer(cfg: TokenizerConfig, texts_dataset, text_column: str, cache_dir: str | None = None,
                            model: ModelConfig | None = None):
    """``cfg.name_or_path`` if set; else the tokenizer saved with ``model.name_or_path`` (a checkpoint's
    embeddings only make sense with its own ids); else a ``cfg.kind`` tokenizer trained once per corpus
    and settings. A checkpoint whose weights are loaded but that has no tokenizer is an error."""
    if cfg.name_or_path:
        return _load(cfg.name_or_path, "tokenizer.name_or_path")
    if model is not None and model.name_or_path:
        path = resolve_model_path(model.name_or_path)
        if has_tokenizer(path):
            return _load(path, "model.name_or_path")
        if loads_checkpoint(model):
            raise ConfigError(
                f"model.name_or_path {model.name_or_path}: the checkpoint has no tokenizer; "
                "set tokenizer.name_or_path to the one it was trained with"
            )
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
    return train_tokenizer(cfg.kind, texts, cfg.vocab_size, Path(folder), lowercase=cfg.lowercase, keep_existing=True)
