"""``nlp-ssl prepare``: tokenize and pack a corpus once into a store (:mod:`nlp_ssl.data.prepared`).

Documents are packed in batches of 1,000, each on its own, as ``tokenize_and_pack``'s ``map`` does. A
shard covers a fixed range of documents and appears under its name only once written, so a
preparation that was killed continues where it stopped and keeps the finished shards. Workers
(``data.num_proc``) tokenize batches that the main process reads and writes in order; what is in
memory is a few batches, whatever the corpus size.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import pickle
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from nlp_ssl import atomic
from nlp_ssl.config import check_ranges
from nlp_ssl.data.prepared import (
    CORPUS_FIELDS,
    DOCUMENTS_PER_BATCH,
    FORMAT,
    SPLITS,
    read_manifest,
    store_bytes,
    token_dtype,
    tokenizer_sha256,
)
from nlp_ssl.data.text import TextDataConfig, corpus_name, document_separator, load_text_splits, special_frame
from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.text.tokenizers import TokenizerConfig, load_or_train_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class PrepareConfig:
    #: The folder of the store (a run reads it with ``data.prepared=<folder>``).
    output_dir: str | None = None
    #: The corpus, its validation hold-out and ``block_size``, as a pretraining run's ``data`` section;
    #: ``num_proc`` is the number of tokenizing processes.
    data: TextDataConfig = field(default_factory=TextDataConfig)
    #: The tokenizer, as a run's ``tokenizer`` section (trained on the training split when not given).
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    #: Seeds the validation hold-out (a run's own seed orders and masks the blocks).
    seed: int = 0
    #: Store word ids too (0.25 bytes per token more), for ``mlm.whole_word_mask=true``.
    word_ids: bool = False
    #: Documents per shard file (a multiple of 1,000): what a killed preparation redoes at most.
    documents_per_shard: int = 100_000

    def __post_init__(self):
        check_ranges(self, documents_per_shard="(0, inf)")
        if self.documents_per_shard % DOCUMENTS_PER_BATCH:
            raise ConfigError(f"documents_per_shard {self.documents_per_shard}: must be a multiple of {DOCUMENTS_PER_BATCH}")


# ---------------------------------------------------------------------------------------------
# Packing a batch of documents into arrays


class ArrayPacker:
    """:class:`~nlp_ssl.data.text.BlockPacker`'s blocks as one ``(blocks, block_size)`` array, made
    with numpy rather than Python lists; with ``word_ids``, also the packed word bit planes."""

    def __init__(self, tokenizer, block_size: int, word_ids: bool, dtype: np.dtype):
        self.backend = _plain_backend(tokenizer)
        self.prefix, self.suffix = special_frame(tokenizer)
        self.separator = document_separator(tokenizer)
        self.block_size, self.word_ids, self.dtype = block_size, word_ids, dtype
        self.body = block_size - len(self.prefix) - len(self.suffix)
        if self.body < 2:
            raise DataError(f"data.block_size {block_size} leaves no room for tokens between the special tokens")

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        if self.word_ids:
            encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        else:  # no offsets or words: the tokenizer's faster path
            encodings = self.backend.encode_batch_fast(texts, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        flat = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=int(lengths.sum()))
        ends = np.cumsum(lengths)
        ids = np.insert(flat, ends, self.separator)  # a separator after every document
        n_blocks = len(ids) // self.body
        body = ids[: n_blocks * self.body].reshape(n_blocks, self.body)
        tokens = self._framed(body, self.prefix, self.suffix).astype(self.dtype)
        if not self.word_ids:
            return tokens, None
        words = np.array(list(chain.from_iterable(e.word_ids for e in encodings)), dtype=np.float64)
        words = np.insert(words, ends, np.nan)  # the separator is no word (None became nan)
        is_word = ~np.isnan(words)
        continues = np.zeros(len(words), dtype=bool)
        continues[1:] = is_word[1:] & is_word[:-1] & (words[1:] == words[:-1])
        is_word = is_word[: n_blocks * self.body].reshape(n_blocks, self.body)
        continues = continues[: n_blocks * self.body].reshape(n_blocks, self.body)
        continues[:, 0] = False  # a block's first word starts there, as the collator numbers words per block
        no = ([False] * len(self.prefix), [False] * len(self.suffix))
        is_word = self._framed(is_word, *no)
        starts = is_word & ~self._framed(continues, *no)
        return tokens, np.concatenate([np.packbits(is_word, axis=1), np.packbits(starts, axis=1)], axis=1)

    @staticmethod
    def _framed(body: np.ndarray, prefix: list, suffix: list) -> np.ndarray:
        n = body.shape[0]
        frame = [np.tile(np.asarray(part, dtype=body.dtype), (n, 1)).reshape(n, len(part)) for part in (prefix, suffix)]
        return np.concatenate([frame[0], body, frame[1]], axis=1)


def _plain_backend(tokenizer):
    """The fast tokenizer's Rust tokenizer, with no truncation or padding (as ``tokenizer(texts)`` calls it)."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"tokenizer {tokenizer.name_or_path!r} is not a fast tokenizer; a prepared store needs one")
    backend = Tokenizer.from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


# ---------------------------------------------------------------------------------------------
# Writing


_PACKER: ArrayPacker | None = None


def _set_packer(packer: ArrayPacker) -> None:
    global _PACKER
    _PACKER = packer


def _pack(texts: list[str]):
    return _PACKER(texts)


class _Batches:
    """Packs batches in order: inline, or on ``num_proc`` worker processes with a few batches in flight."""

    def __init__(self, packer: ArrayPacker, num_proc: int | None):
        self.packer, self.pool = packer, None
        if num_proc and num_proc > 1:
            # Forked workers must not start the tokenizer's own threads (it would warn, then refuse).
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            self.pool = context.Pool(num_proc, initializer=_set_packer, initargs=(packer,))
        self.window = 2 * num_proc if self.pool else 1

    def map(self, jobs):
        """``jobs``: (tag, texts) pairs; yields (tag, packed) in the same order."""
        if self.pool is None:
            for tag, texts in jobs:
                yield tag, self.packer(texts)
            return
        pending = deque()
        for tag, texts in jobs:
            pending.append((tag, self.pool.apply_async(_pack, (texts,))))
            if len(pending) >= self.window:
                tag, result = pending.popleft()
                yield tag, result.get()
        while pending:
            tag, result = pending.popleft()
            yield tag, result.get()

    def close(self):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _shard_paths(root: Path, split: str, index: int) -> tuple[Path, Path]:
    stem = root / split / f"{index:05d}"
    return stem.with_suffix(".tokens"), stem.with_suffix(".words")


def _key(cfg: PrepareConfig, raw, tokenizer, dtype: np.dtype) -> dict:
    data = cfg.data
    corpus = {name: getattr(data, name) for name in CORPUS_FIELDS}
    corpus.update(name=corpus_name(data), split_seed=cfg.seed,
                  fingerprints={split: raw[split]._fingerprint for split in SPLITS})
    return {
        "format": FORMAT,
        "corpus": corpus,
        "tokenizer": {"sha256": tokenizer_sha256(tokenizer), "vocab_size": len(tokenizer),
                      "class": type(tokenizer).__name__},
        "block_size": data.block_size,
        "dtype": dtype.name,
        "word_ids": cfg.word_ids,
        "documents_per_shard": cfg.documents_per_shard,
        "documents_per_batch": DOCUMENTS_PER_BATCH,
    }


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{name}.")
        elif x != y:
            out.append(f"{prefix}{name}")
    return out


def _claim(root: Path, key: dict) -> bool:
    """Take ``root`` for this preparation; True when it already holds it complete. A folder that holds
    another preparation, or anything else, is refused rather than overwritten."""
    manifest, plan = root / "manifest.json", root / "prepare.json"
    for existing in (manifest, plan):
        if existing.is_file():
            found = json.loads(existing.read_text())
            found = {k: found.get(k) for k in key}
            if found != key:
                raise ConfigError(
                    f"output_dir {root}: holds a store of other settings (differs in {', '.join(_differences(found, key))}); "
                    "remove it or choose another output_dir"
                )
            return existing == manifest
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"output_dir {root}: not empty and not a prepared store; choose an empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    atomic.write_json(root / "prepare.json", key)
    return False


def prepare(cfg: PrepareConfig) -> Path:
    """Write the store (or finish one that was interrupted); return its folder."""
    if not cfg.output_dir:
        raise ConfigError("output_dir: set the folder to write the prepared store to (output_dir=<folder>)")
    if cfg.data.streaming or cfg.data.prepared:
        raise ConfigError("data.streaming / data.prepared: a store is prepared from a corpus, not from a stream or a store")
    root = Path(cfg.output_dir)
    start = time.perf_counter()
    raw = load_text_splits(cfg.data, seed=cfg.seed)
    tokenizer_cfg = cfg.tokenizer
    if tokenizer_cfg.name_or_path and tokenizer_cfg.name_or_path.startswith("builtin:"):
        from nlp_ssl.models.builders import resolve_model_path

        tokenizer_cfg = dataclasses.replace(tokenizer_cfg, name_or_path=resolve_model_path(tokenizer_cfg.name_or_path))
    tokenizer = load_or_train_tokenizer(tokenizer_cfg, raw["train"], cfg.data.text_column, cfg.data.cache_dir)
    dtype = token_dtype(len(tokenizer))
    key = _key(cfg, raw, tokenizer, dtype)
    if _claim(root, key):
        logger.info("%s: already prepared", root)
        return root
    if not (root / "tokenizer" / "tokenizer.json").is_file():
        tmp = atomic.staging_dir(root / "tokenizer")
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, atomic.file_mode() | (atomic.file_mode() & 0o444) >> 2)  # a folder as mkdir makes it: 0755
        atomic.publish_dir(tmp, root / "tokenizer")
    packer = ArrayPacker(tokenizer, cfg.data.block_size, cfg.word_ids, dtype)
    loaded = time.perf_counter()
    batches = _Batches(packer, cfg.data.num_proc)
    try:
        splits = {split: _write_split(root, split, raw[split].select_columns([cfg.data.text_column]), cfg, batches)
                  for split in SPLITS}
    finally:
        batches.close()
    tokens = sum(s["tokens"] for s in splits.values())
    # Of the last session only, when an interrupted preparation was continued.
    seconds = {"loading": round(loaded - start, 2), "packing": round(time.perf_counter() - loaded, 2)}
    atomic.write_json(root / "manifest.json", {**key, "splits": splits, "seconds": seconds})
    for split, info in splits.items():
        logger.info("%s %s: %d documents, %d blocks, %d tokens", root, split, info["documents"], info["blocks"], info["tokens"])
    logger.info("%s: %.2f bytes per token on disk; packed %.0f tokens/s", root, store_bytes(root) / max(tokens, 1),
                tokens / max(seconds["packing"], 1e-9))
    return root


def _write_split(root: Path, split: str, documents, cfg: PrepareConfig, batches: _Batches) -> dict:
    folder = root / split
    folder.mkdir(exist_ok=True)
    for leftover in folder.glob(".*.tmp-*"):  # a shard being written when the last preparation was killed
        leftover.unlink()
    n, per_shard = len(documents), cfg.documents_per_shard
    column = cfg.data.text_column
    shards = [(i, start, min(start + per_shard, n)) for i, start in enumerate(range(0, n, per_shard))]
    todo = [shard for shard in shards if not _shard_paths(root, split, shard[0])[0].is_file()]
    if len(todo) < len(shards):
        logger.info("%s %s: %d of %d shards already written", root, split, len(shards) - len(todo), len(shards))

    def jobs():
        for index, start, stop in todo:
            for batch in range(start, stop, DOCUMENTS_PER_BATCH):
                end = min(batch + DOCUMENTS_PER_BATCH, stop)
                # Each batch through a memory map of its own (a pickle round trip reopens the Arrow files):
                # pages a map has read stay resident while it lives, and the held-out split's shuffled
                # order reads from all over the corpus, so one map would end up holding all of it.
                yield (index, end == stop), pickle.loads(pickle.dumps(documents))[batch:end][column]

    writer = None
    for (index, last), (tokens, words) in batches.map(jobs()):
        if writer is None:
            writer = _ShardWriter(*_shard_paths(root, split, index), cfg.word_ids)
        writer.append(tokens, words)
        if last:
            writer.commit()
            writer = None
    out = {"documents": n, "blocks": 0, "tokens": 0, "shards": []}
    for index, start, stop in shards:
        tokens_path, words_path = _shard_paths(root, split, index)
        blocks = tokens_path.stat().st_size // (batches.packer.dtype.itemsize * cfg.data.block_size)
        shard = {"tokens": f"{split}/{tokens_path.name}", "blocks": blocks, "documents": stop - start}
        if cfg.word_ids:
            shard["words"] = f"{split}/{words_path.name}"
        out["shards"].append(shard)
        out["blocks"] += blocks
    out["tokens"] = out["blocks"] * cfg.data.block_size
    if out["blocks"] == 0:
        raise DataError(f"no {cfg.data.block_size}-token block could be packed from the {n} {split} documents: "
                        "the text is too short")
    return out


class _ShardWriter:
    """Appends blocks to hidden files beside the shard's; ``commit`` renames them into place, words first,
    so a shard's ``.tokens`` file exists only once the shard is complete."""

    def __init__(self, tokens_path: Path, words_path: Path, word_ids: bool):
        self.targets = [tokens_path] + ([words_path] if word_ids else [])
        self.tmp = [p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in self.targets]
        self.files = [p.open("wb") for p in self.tmp]

    def append(self, tokens: np.ndarray, words: np.ndarray | None) -> None:
        self.files[0].write(tokens.tobytes())
        if len(self.files) > 1:
            self.files[1].write(words.tobytes())

    def commit(self) -> None:
        for f in self.files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        mode = atomic.file_mode()
        for tmp, target in reversed(list(zip(self.tmp, self.targets))):
            os.chmod(tmp, mode)
            os.replace(tmp, target)


def main(argv: list[str] | None = None) -> Path:
    """``nlp-ssl prepare [--config file.yaml] output_dir=<folder> [key=value ...]``."""
    from nlp_ssl.config import parse_config

    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    root = prepare(parse_config(PrepareConfig, argv))
    manifest = read_manifest(root)
    parts = [f"{split} {manifest['splits'][split]['blocks']:,} blocks" for split in SPLITS]
    tokens = sum(manifest["splits"][s]["tokens"] for s in SPLITS)
    print(f"prepared {root}: {', '.join(parts)} of {manifest['block_size']} {manifest['dtype']} tokens, "
          f"{store_bytes(root, ('.tokens',)) / tokens:.2f} bytes/token"
          + (f" + {store_bytes(root, ('.words',)) / tokens:.2f} for word ids" if manifest["word_ids"] else ""))
    return root
