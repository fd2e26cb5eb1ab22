"""The run's tokenizer: a given one, the checkpoint's own, or one trained on the training texts and cached.

WordPiece (BERT), byte-level BPE (GPT-2) and BPE (XLM) tokenizers are trained with 🤗 tokenizers and
saved as folders that ``AutoTokenizer.from_pretrained`` loads with no nlp_ssl code.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datasets import IterableDataset
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from nlp_ssl import atomic
from nlp_ssl.config import check_ranges
from nlp_ssl.data.cache import cache_root
from nlp_ssl.errors import ConfigError
from nlp_ssl.models.builders import ModelConfig, loads_checkpoint, resolve_model_path

TokenizerKind = Literal["wordpiece", "bytelevel_bpe", "bpe"]

# Special tokens per kind, in id order; the first ones get ids 0, 1, 2, ...
SPECIALS: dict[str, dict[str, str]] = {
    "wordpiece": {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"},
    "bytelevel_bpe": {"eos_token": "<|endoftext|>", "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"},
    # XLM's ids: <s>=0 (bos), </s>=1 (eos, also cls and sep), <pad>=2, <unk>=3, <mask>=4.
    "bpe": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"},
}


def check_kind(kind: str, key: str = "tokenizer.kind") -> None:
    if kind not in SPECIALS:
        raise ConfigError(f"{key} {kind!r} is not one of {list(SPECIALS)} (the kinds this project trains; a trained "
                          f"SentencePiece or other tokenizer is loaded with tokenizer.name_or_path)")


def _build(kind: str, vocab_size: int, lowercase: bool) -> tuple[Tokenizer, trainers.Trainer]:
    check_kind(kind)
    specials = list(dict.fromkeys(SPECIALS[kind].values()))
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, min_frequency=2)
    elif kind == "bytelevel_bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            min_frequency=2,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
        norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        tok.normalizer = normalizers.Sequence(norm)
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, min_frequency=2, end_of_word_suffix="</w>"
        )
    return tok, trainer


def _post_processor(kind: str, tok: Tokenizer):
    if kind == "wordpiece":
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        return processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
    if kind == "bpe":  # XLM: </s> A </s> [B </s>]
        eos = tok.token_to_id("</s>")
        return processors.TemplateProcessing(
            single="</s> $A </s>", pair="</s> $A </s> $B:1 </s>:1", special_tokens=[("</s>", eos)]
        )
    return processors.ByteLevel(trim_offsets=False)


def train_tokenizer(
    kind: TokenizerKind,
    texts: Iterable[str],
    vocab_size: int,
    output_dir: str | Path,
    lowercase: bool = True,
    model_max_length: int = 512,
    keep_existing: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer of ``kind`` on ``texts`` and save it atomically to ``output_dir``.

    ``keep_existing``: ``output_dir`` is a cache folder named by its settings, and a complete tokenizer
    another process saved there meanwhile is kept (see :func:`nlp_ssl.atomic.publish_cache_dir`)."""
    tok, trainer = _build(kind, vocab_size, lowercase)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = _post_processor(kind, tok)
    specials = dict(SPECIALS[kind])
    if kind == "bpe":
        specials.update(cls_token="</s>", sep_token="</s>")
    input_names = ["input_ids", "token_type_ids", "attention_mask"] if kind == "wordpiece" else ["input_ids", "attention_mask"]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length, model_input_names=input_names, **specials
    )
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    fast.save_pretrained(tmp)
    if keep_existing:
        atomic.publish_cache_dir(tmp, output_dir, "tokenizer.json")
    else:
        atomic.publish_dir(tmp, output_dir)
    return AutoTokenizer.from_pretrained(output_dir)


@dataclass
class TokenizerConfig:
    """The tokenizer: one to load, or the kind and vocabulary of one to train on the corpus."""

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


def load_tokenizer_from(source: str, key: str):
    """The tokenizer at ``source`` (a folder or a Hub name, asked about once within ``hub.timeout``: the
    loader would retry a silent Hub for minutes), or one line naming ``key``."""
    source = resolve_model_path(source, key)
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
        return load_tokenizer_from(cfg.name_or_path, "tokenizer.name_or_path")
    if model is not None and model.name_or_path:
        path = resolve_model_path(model.name_or_path)
        if has_tokenizer(path):
            return load_tokenizer_from(path, "model.name_or_path")
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
