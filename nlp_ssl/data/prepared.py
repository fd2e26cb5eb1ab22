"""Prepare once, train many times: a corpus tokenized and packed into a memory-mapped token store.

``nlp-ssl prepare`` (:mod:`nlp_ssl.data.prepare`) writes, and ``data.prepared=<dir>`` reads, a folder
of raw little-endian arrays (nanoGPT's format: ``uint16`` when the vocabulary fits, ``uint32``
otherwise), one file per shard of documents::

    manifest.json            written last: the key below, and every shard's counts
    prepare.json             the key (corpus, tokenizer hash, block layout), written first
    tokenizer/               the tokenizer the tokens belong to
    train/00000.tokens       (blocks, block_size) token ids
    train/00000.words        with word_ids=true: two bit planes per block (a word's tokens, a word's
                             first token), from which whole-word masking's word ids are rebuilt
    validation/...

The blocks are those of :func:`nlp_ssl.data.text.tokenize_and_pack` on the same documents, in the
same order, so a run from a store trains on exactly the blocks of a run that tokenizes as it starts.

Raw arrays rather than Arrow: a block is a fixed-size row, so there is nothing to index or offset;
2 bytes per token on disk, a memory map gives O(1) random access with no decoding, and any tool
(numpy, nanoGPT's loaders) reads the files.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from pathlib import Path

import numpy as np
import torch.utils.data

from nlp_ssl.data.text import TextDataConfig
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.text.tokenizers import TokenizerConfig, has_tokenizer, load_or_train_tokenizer

FORMAT = "nlp_ssl.prepared/1"
#: Documents packed together, as ``tokenize_and_pack``'s ``map`` batches: a batch's last partial block is dropped.
DOCUMENTS_PER_BATCH = 1000
SPLITS = ("train", "validation")
#: The data settings that choose the documents: a run from a store may leave them at their defaults
#: or repeat the store's values, not name another corpus.
CORPUS_FIELDS = ("source", "dataset_config", "train_file", "extra_train_files", "validation_file", "text_column",
                 "validation_split", "max_train_documents")


def tokenizer_sha256(tokenizer) -> str:
    """A fast tokenizer's identity: the hash of its full serialisation (vocabulary, rules, specials)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"tokenizer {tokenizer.name_or_path!r} is not a fast tokenizer; a prepared store needs one")
    return hashlib.sha256(backend.to_str().encode()).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def word_ids_from_bits(bits: np.ndarray, block_size: int) -> np.ndarray:
    """``(blocks, block_size)`` word ids numbered 0, 1, 2, ... per block (``-1``: no word) from the bit planes."""
    half = bits.shape[-1] // 2
    is_word = np.unpackbits(bits[..., :half], axis=-1, count=block_size).astype(bool)
    starts = np.unpackbits(bits[..., half:], axis=-1, count=block_size)
    index = np.cumsum(starts, axis=-1, dtype=np.int64) - 1
    return np.where(is_word, index, -1)


def store_bytes(root: Path, suffixes: tuple[str, ...] = (".tokens", ".words")) -> int:
    """Bytes of a store's shard files with these suffixes."""
    return sum(p.stat().st_size for split in SPLITS for p in (Path(root) / split).glob("*") if p.suffix in suffixes)


# ---------------------------------------------------------------------------------------------
# Reading


class PreparedBlocks(torch.utils.data.Dataset):
    """One split of a store as a map-style dataset of ``{"input_ids": [...]}`` (and ``word_ids``) rows.

    Row ``i`` is read from its shard's memory map, so indexing is O(1) and the trainer's shuffling
    sampler, resume (skipping batches costs no reads) and per-process sharding apply as to any
    map-style dataset. Maps are opened on first use in each process (DataLoader workers included).
    """

    def __init__(self, root: Path, shards: list[dict], block_size: int, dtype: str, word_ids: bool):
        self.root, self.shards, self.block_size = Path(root), shards, block_size
        self.dtype, self.word_ids = np.dtype(dtype), word_ids
        self.ends = np.cumsum([s["blocks"] for s in shards]).tolist()
        self._maps: list | None = None

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getstate__(self):
        return {**self.__dict__, "_maps": None}

    def _open(self) -> list:
        if self._maps is None:
            width = 2 * -(-self.block_size // 8)
            self._maps = [
                (np.memmap(self.root / s["tokens"], dtype=self.dtype, mode="r", shape=(s["blocks"], self.block_size)),
                 np.memmap(self.root / s["words"], dtype=np.uint8, mode="r", shape=(s["blocks"], width))
                 if self.word_ids else None)
                for s in self.shards
            ]
        return self._maps

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"block {index} of {len(self)}")
        shard = bisect_right(self.ends, index)
        row = index - (self.ends[shard - 1] if shard else 0)
        tokens, words = self._open()[shard]
        out = {"input_ids": tokens[row].tolist()}
        if words is not None:
            out["word_ids"] = word_ids_from_bits(np.asarray(words[row]), self.block_size).tolist()
        return out

    def token_counts(self, minlength: int, chunk_blocks: int = 1 << 15) -> np.ndarray:
        """How often each token id occurs, read a chunk at a time (memory independent of the split's size)."""
        counts = np.zeros(minlength, dtype=np.int64)
        for tokens, _ in self._open():
            for start in range(0, len(tokens), chunk_blocks):
                found = np.bincount(np.asarray(tokens[start : start + chunk_blocks]).ravel(), minlength=minlength)
                counts[: len(found)] += found[:minlength] if len(found) > minlength else found
        return counts


def read_manifest(path: str | Path) -> dict:
    root = Path(path)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        why = ("its preparation did not finish (run `nlp-ssl prepare` again with the same settings to finish it)"
               if (root / "prepare.json").is_file() else "not a prepared store (make one with `nlp-ssl prepare`)")
        raise DataError(f"data.prepared {root}: no manifest.json: {why}")
    try:
        found = json.loads(manifest.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"data.prepared {manifest}: not valid JSON ({e})") from None
    if found.get("format") != FORMAT:
        raise DataError(f"data.prepared {root}: format {found.get('format')!r}, this nlp_ssl reads {FORMAT!r}; prepare it again")
    return found


class PreparedStore:
    """An opened store, checked against a run's ``data`` settings."""

    def __init__(self, cfg: TextDataConfig):
        self.root = Path(cfg.prepared)
        self.manifest = manifest = read_manifest(self.root)
        where = f"data.prepared {self.root}"
        if cfg.block_size != manifest["block_size"]:
            raise ConfigError(f"{where}: holds {manifest['block_size']}-token blocks, but data.block_size={cfg.block_size}; "
                              f"set data.block_size={manifest['block_size']} or prepare the corpus again")
        default, corpus = TextDataConfig(), manifest["corpus"]
        for name in CORPUS_FIELDS:
            value = getattr(cfg, name)
            if value != getattr(default, name) and value != corpus[name]:
                raise ConfigError(f"{where}: was prepared with data.{name}={corpus[name]!r}, not {value!r}; "
                                  f"drop data.{name} or prepare that corpus")
        for split in SPLITS:
            for shard in manifest["splits"][split]["shards"]:
                width = {"tokens": np.dtype(manifest["dtype"]).itemsize * manifest["block_size"],
                         "words": 2 * -(-manifest["block_size"] // 8)}
                for kind in ("tokens", "words"):
                    if kind not in shard:
                        continue
                    path = self.root / shard[kind]
                    size = path.stat().st_size if path.is_file() else None
                    if size != shard["blocks"] * width[kind]:
                        state = "missing" if size is None else f"{size} bytes, not {shard['blocks'] * width[kind]}"
                        raise DataError(f"{where}: shard {path} is {state}; prepare the store again")

    @property
    def name(self) -> str:
        return f"{self.manifest['corpus']['name']} (prepared in {self.root})"

    def tokenizer(self, tokenizer_cfg: TokenizerConfig, model_cfg=None):
        """The store's tokenizer; a tokenizer the run names (``tokenizer.name_or_path``, or a checkpoint's
        own) must be the same one, since the ids on disk are its ids."""
        from transformers import AutoTokenizer

        named = tokenizer_cfg.name_or_path
        if not named and model_cfg is not None and model_cfg.name_or_path:
            from nlp_ssl.models.builders import resolve_model_path

            path = resolve_model_path(model_cfg.name_or_path)
            named = path if has_tokenizer(path) else None
        tokenizer = AutoTokenizer.from_pretrained(self.root / "tokenizer")
        if named:
            given = load_or_train_tokenizer(tokenizer_cfg, None, "text", model=model_cfg)
            if tokenizer_sha256(given) != self.manifest["tokenizer"]["sha256"]:
                raise ConfigError(f"data.prepared {self.root}: was tokenized with another tokenizer than {named}; "
                                  f"prepare it with tokenizer.name_or_path={named}, or drop the run's tokenizer")
            return given
        return tokenizer

    def blocks(self, word_ids: bool = False) -> dict[str, PreparedBlocks]:
        """``{"train", "validation"}``; ``word_ids`` rows too (the store must have been prepared with them)."""
        if word_ids and not self.manifest["word_ids"]:
            raise ConfigError(f"data.prepared {self.root}: holds no word ids, which whole-word masking needs; "
                              "prepare it again with word_ids=true")
        m = self.manifest
        return {split: PreparedBlocks(self.root, m["splits"][split]["shards"], m["block_size"], m["dtype"], word_ids)
                for split in SPLITS}
