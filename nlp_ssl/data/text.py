"""Unlabelled text in, fixed-length token blocks out.

Sources: local txt/jsonl/csv/parquet files, a ``save_to_disk`` folder, a Hub dataset name, or the
built-in corpus (``builtin:wiki``). Local files are checked before anything else runs, so an empty
file, bytes that are not UTF-8 or a missing column fail with the file, line and field named.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, IterableDataset, Value, concatenate_datasets, load_dataset, load_from_disk

from nlp_ssl.config import check_ranges
from nlp_ssl.data.cache import cache_root
from nlp_ssl.data.holdout import first_rows, hold_out
from nlp_ssl.data.lines import check_streamed_file, raise_for_bad_line
from nlp_ssl.errors import ConfigError, DataError

BUILTIN_PREFIX = "builtin:"
#: The corpus a run reads unless told otherwise (``data.source``).
DEFAULT_SOURCE = "builtin:wiki"
FILE_BUILDERS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class TextDataConfig:
    """The corpus (a file, the Hub, a built-in or a prepared store) and how it is cut into blocks."""

    #: ``builtin:wiki`` (English, test split held out), ``builtin:wiki_fr``, ``builtin:wiki_es``,
    #: a ``save_to_disk`` folder, or a Hub dataset name. Left at its default when ``train_file`` is set.
    source: str = DEFAULT_SOURCE
    dataset_config: str | None = None
    train_file: str | None = None
    #: More unlabelled files whose texts join the training corpus (same ``text_column``; a .txt file's
    #: lines). Task-adaptive pretraining: ``train_file`` = the task's labelled pool (labels unread),
    #: plus other in-domain text here. Validation is held out of the whole.
    extra_train_files: list[str] = field(default_factory=list)
    validation_file: str | None = None
    text_column: str = "text"
    #: Fraction held out for validation when the source has no validation split.
    validation_split: float = 0.05
    block_size: int = 128
    #: Stream the corpus (an IterableDataset) instead of loading it: for corpora larger than memory.
    streaming: bool = False
    #: In streaming mode: documents held out for validation, and the window of documents shuffled
    #: together (each window is permuted from the seed and its position, so a resume is exact).
    streaming_validation_documents: int = 1000
    shuffle_buffer: int = 10_000
    num_proc: int | None = None
    max_train_documents: int | None = None
    cache_dir: str | None = None
    #: A store written once by ``nlp-ssl prepare``: its blocks and tokenizer, read from disk (the
    #: corpus settings above then only have to agree with it).
    prepared: str | None = None

    def __post_init__(self):
        check_ranges(self, validation_split="(0, 1)", block_size="(0, inf)", streaming_validation_documents="(0, inf)",
                     shuffle_buffer="(0, inf)", num_proc="(0, inf)", max_train_documents="(0, inf)")
        check_one_corpus(self.train_file, "data.source", self.source, DEFAULT_SOURCE)
        if self.extra_train_files and self.streaming:
            raise ConfigError("data.extra_train_files: not supported with data.streaming=true; stream one file or a "
                              "save_to_disk folder that holds them all")
        if self.prepared and self.streaming:
            raise ConfigError("data.prepared: a prepared store is read from disk, not streamed; drop data.streaming")


# ---------------------------------------------------------------------------------------------
# Checks on local files


def check_one_corpus(train_file: str | None, key: str, value: str, default: str) -> None:
    """A run reads one corpus: a ``train_file`` beside a source other than the default is refused rather
    than the source ignored (the default steps aside for a file)."""
    if train_file and value != default:
        raise ConfigError(f"data.train_file {train_file} and {key} {value} are both set, but a run reads one of them: "
                          f"drop {key} to read the file, or data.train_file to read {value}")


def check_text_file(path: str | Path, role: str) -> Path:
    """Fail clearly on a missing, empty or non-UTF-8 file (``role`` is the config key, e.g. train_file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{role} {path}: file does not exist")
    suffix = path.suffix.lower()
    if suffix not in FILE_BUILDERS:
        raise DataError(f"{role} {path}: unsupported extension {suffix!r}; use one of {sorted(FILE_BUILDERS)}")
    if path.stat().st_size == 0:
        raise DataError(f"{role} {path}: file is empty")
    if suffix == ".parquet":
        return path
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, has_text = 1, False
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as e:
                before = chunk[: e.start]
                bad_line = line + before.count(b"\n")
                raise DataError(
                    f"{role} {path} line {bad_line}: not valid UTF-8 (byte 0x{chunk[e.start]:02x}); "
                    "re-encode the file as UTF-8"
                ) from None
            line += chunk.count(b"\n")
            has_text = has_text or bool(text.strip())
    if not has_text:
        raise DataError(f"{role} {path}: file is empty (only whitespace)")
    return path


def _row_to_line(path: Path, index: int) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return f"line {index + 2}"  # header line first
    if suffix in (".jsonl", ".txt", ".text"):
        return f"line {index + 1}"
    return f"row {index}"


def check_text_column(ds: Dataset, column: str, where: str, path: Path | None = None) -> None:
    """The column exists and no row lacks text; ``where`` names the source in the message."""
    if column not in ds.column_names:
        raise DataError(f"{where}: no column {column!r} (columns: {', '.join(ds.column_names)}); set data.text_column")
    arrow = ds.data.column(column)
    if not (pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type)):
        if path is not None:  # a number or a list among texts: the line that holds it
            raise_for_bad_line(path, column, where)
        raise DataError(f"{where}: field {column!r} holds {arrow.type} values, not text; set data.text_column to a text column")
    if arrow.null_count:
        if path is not None:  # the reader's row is not the file's line (blank lines, quoted line breaks)
            raise_for_bad_line(path, column, where)
        first = pc.index(pc.is_null(arrow), True).as_py()
        at = _row_to_line(path, first) if path else f"row {first}"
        raise DataError(f"{where} {at}: field {column!r} missing")
    if len(ds) == 0:
        raise DataError(f"{where}: no rows")


# ---------------------------------------------------------------------------------------------
# Loading


def _load_file(path: Path, role: str, cfg: TextDataConfig, streaming: bool):
    builder = FILE_BUILDERS[path.suffix.lower()]
    if builder == "text" and cfg.text_column != "text":
        raise DataError(f"{role} {path}: a .txt file has one column, 'text', not {cfg.text_column!r}")
    if streaming:  # a bad line would otherwise surface mid-run, deep in the tokenizer or the reader
        check_streamed_file(path, cfg.text_column, f"{role} {path}", cache_root(cfg.cache_dir))
    try:
        ds = load_dataset(builder, data_files={"train": str(path)}, split="train", streaming=streaming, cache_dir=cfg.cache_dir)
    except Exception as e:  # datasets' own parse errors are long; name the file and the line
        raise_for_bad_line(path, cfg.text_column, f"{role} {path}")
        raise DataError(f"{role} {path}: could not be read as {builder} ({type(e).__name__}: {str(e)[:200]})") from None
    if not streaming:
        check_text_column(ds, cfg.text_column, f"{role} {path}", path)
    elif cfg.text_column not in (ds.column_names or [cfg.text_column]):
        raise DataError(f"{role} {path}: no column {cfg.text_column!r} (columns: {', '.join(ds.column_names)})")
    elif getattr((ds.features or {}).get(cfg.text_column), "dtype", "string") not in ("string", "large_string"):
        raise DataError(f"{role} {path}: field {cfg.text_column!r} holds {ds.features[cfg.text_column].dtype} values, not text; "
                        "set data.text_column to a text column")
    else:  # a stream's other columns (a csv's labels) have no known names for the tokenizer's map to drop
        ds = ds.select_columns([cfg.text_column])
    return ds


def read_text_file(path: str | Path, role: str, text_column: str = "text") -> Dataset:
    """One local file's texts in file order, checked like a training file (a .txt file's column is 'text')."""
    path = check_text_file(path, role)
    column = "text" if FILE_BUILDERS[path.suffix.lower()] == "text" else text_column
    return _load_file(path, role, TextDataConfig(text_column=column), False).select_columns([column])


def with_extra_files(train: Dataset, cfg: TextDataConfig) -> Dataset:
    """``train``'s texts followed by those of ``cfg.extra_train_files`` (one column, ``cfg.text_column``)."""
    if not cfg.extra_train_files:
        return train
    column = cfg.text_column
    parts = [train.select_columns([column])]
    for i, path in enumerate(cfg.extra_train_files):
        role = f"data.extra_train_files[{i}]"
        path = check_text_file(path, role)
        if FILE_BUILDERS[path.suffix.lower()] == "text":  # a .txt file's one column is 'text'
            extra = _load_file(path, role, dataclasses.replace(cfg, text_column="text", extra_train_files=[]), False)
            extra = extra.rename_column("text", column) if column != "text" else extra
        else:
            extra = _load_file(path, role, cfg, False)
        parts.append(extra.select_columns([column]))
    parts = [part if part.features[column] == Value("string") else part.cast_column(column, Value("string")) for part in parts]
    return concatenate_datasets(parts)


def corpus_name(cfg: TextDataConfig) -> str:
    """The training corpus as the model card names it: the file or source, and any extra files."""
    if cfg.prepared:
        from nlp_ssl.data.prepared import read_manifest

        return f"{read_manifest(cfg.prepared)['corpus']['name']} (prepared in {cfg.prepared})"
    return " + ".join([cfg.train_file or cfg.source, *cfg.extra_train_files])


def load_source(source: str, config_name: str | None, cache_dir: str | None, streaming: bool = False, key: str = "data.source"):
    """A folder that ``save_to_disk`` wrote (a stream of its train split when ``streaming``), or a Hub
    dataset (its train split when ``streaming``); anything else is one line naming ``key``."""
    where = f"{key} {source}"
    if os.path.isdir(source):
        try:
            loaded = load_from_disk(source)
        except FileNotFoundError:
            raise DataError(f"{where}: a folder, but not a dataset written by save_to_disk (no dataset_info.json "
                            f"or dataset_dict.json); for text files use data.train_file") from None
        if not streaming:
            return loaded
        if isinstance(loaded, DatasetDict) and "train" not in loaded:
            raise DataError(f"{where}: no 'train' split (splits: {', '.join(loaded)})")
        return (loaded["train"] if isinstance(loaded, DatasetDict) else loaded).to_iterable_dataset()
    from huggingface_hub import constants

    from nlp_ssl.hub import check_hub_repo

    check_hub_repo(source, "dataset", key)
    try:
        return load_dataset(source, config_name, split="train" if streaming else None, streaming=streaming,
                            cache_dir=cache_dir)
    except ConnectionError as e:
        if constants.HF_HUB_OFFLINE:
            raise DataError(f"{where}: not a local folder, and HF_HUB_OFFLINE=1 is set with no copy of it in the "
                            f"datasets cache") from None
        raise DataError(f"{where}: {str(e).splitlines()[0][:200]}") from None
    except (FileNotFoundError, ValueError) as e:  # no such dataset, config or split; files it cannot read
        raise DataError(f"{where}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None


def _builtin(cfg: TextDataConfig) -> Dataset:
    from nlp_ssl.data.wiki import load_wiki_corpus

    name = cfg.source[len(BUILTIN_PREFIX):]
    splits = {"wiki": "en_train", "wiki_en": "en_train", "wiki_fr": "fr", "wiki_es": "es"}
    if name not in splits:
        known = [BUILTIN_PREFIX + s for s in splits]
        raise DataError(f"data.source {cfg.source!r}: unknown built-in corpus; choose one of {known}")
    return load_wiki_corpus(cfg.cache_dir)[splits[name]]


def load_text_splits(cfg: TextDataConfig, seed: int = 0) -> DatasetDict | dict[str, IterableDataset]:
    """``{"train", "validation"}`` of raw text; validation is carved out when the source has none."""
    if cfg.streaming:
        return _load_streaming(cfg, seed)
    if cfg.train_file:
        train = _load_file(check_text_file(cfg.train_file, "data.train_file"), "data.train_file", cfg, False)
        train = with_extra_files(train, cfg)
        if cfg.validation_file:
            splits = DatasetDict(train=train, validation=_validation_file(cfg))
        else:
            splits = hold_out(train, cfg.validation_split, seed, f"data.train_file {cfg.train_file}")
    elif cfg.source.startswith(BUILTIN_PREFIX):
        splits = hold_out(with_extra_files(_builtin(cfg), cfg), cfg.validation_split, seed, f"data.source {cfg.source}")
    else:
        loaded = load_source(cfg.source, cfg.dataset_config, cfg.cache_dir)
        if isinstance(loaded, Dataset):
            splits = hold_out(with_extra_files(loaded, cfg), cfg.validation_split, seed, f"data.source {cfg.source}")
        elif "train" not in loaded:
            raise DataError(f"data.source {cfg.source}: no 'train' split (splits: {', '.join(loaded)})")
        elif "validation" in loaded:
            splits = DatasetDict(train=with_extra_files(loaded["train"], cfg), validation=loaded["validation"])
        else:
            splits = hold_out(with_extra_files(loaded["train"], cfg), cfg.validation_split, seed, f"data.source {cfg.source}")
        for name, ds in splits.items():
            check_text_column(ds, cfg.text_column, f"data.source {cfg.source} [{name}]")
    if cfg.validation_file and not cfg.train_file:
        splits["validation"] = _validation_file(cfg)
    splits["train"] = first_rows(splits["train"], cfg.max_train_documents)
    return splits


def _validation_file(cfg: TextDataConfig) -> Dataset:
    return _load_file(check_text_file(cfg.validation_file, "data.validation_file"), "data.validation_file", cfg, False)


def _load_streaming(cfg: TextDataConfig, seed: int) -> dict[str, IterableDataset]:
    if cfg.train_file:
        stream = _load_file(check_text_file(cfg.train_file, "data.train_file"), "data.train_file", cfg, True)
    elif cfg.source.startswith(BUILTIN_PREFIX):
        stream = _builtin(cfg).to_iterable_dataset()
    else:
        stream = load_source(cfg.source, cfg.dataset_config, cfg.cache_dir, streaming=True)
    if cfg.validation_file:
        validation = _load_file(check_text_file(cfg.validation_file, "data.validation_file"), "data.validation_file", cfg, True)
        train = stream
    else:
        held_out = cfg.streaming_validation_documents
        # Reads at most held_out + 1 documents: a stream that short would leave nothing to train on.
        seen = sum(1 for _ in stream.take(held_out + 1))
        if seen <= held_out:
            where = f"data.train_file {cfg.train_file}" if cfg.train_file else f"data.source {cfg.source}"
            raise DataError(
                f"{where}: the stream has {seen} document(s), not more than the data.streaming_validation_documents="
                f"{held_out} held out for validation; lower it or pass data.validation_file"
            )
        validation = stream.take(held_out)
        train = stream.skip(held_out)
    train = train.map(WindowShuffle(seed), batched=True, batch_size=cfg.shuffle_buffer, with_indices=True,
                      features=train.features)
    return {"train": train, "validation": validation}


class WindowShuffle:
    """Batched ``map`` function that permutes each window of ``shuffle_buffer`` streamed documents.

    Unlike ``IterableDataset.shuffle``, whose buffer is lost on resume, a window's order follows from
    the seed and the window's position alone: the stream's ``state_dict()`` (which ``datasets`` keeps
    for batched maps as "start of the window + examples since") resumes it exactly, re-reading at most
    one window whatever the step. The order is the same every epoch; masks still change per epoch.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        order = np.random.default_rng([self.seed, indices[0]]).permutation(len(indices))
        return {name: [values[i] for i in order] for name, values in batch.items()}


# ---------------------------------------------------------------------------------------------
# Tokenization and packing


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts around one sequence, e.g. ([CLS], [SEP]) or ([], [])."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


def document_separator(tokenizer) -> int:
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if sep is None:
        raise DataError(f"tokenizer {tokenizer.name_or_path!r} has neither a sep nor an eos token to separate documents")
    return sep


class BlockPacker:
    """Batched ``datasets.map`` function: tokenize documents and pack them into ``block_size`` blocks.

    Documents are joined with the tokenizer's separator (``[SEP]`` / EOS) and each block is framed by
    the tokenizer's own specials (``[CLS] ... [SEP]`` for BERT, nothing for GPT-2). With
    ``word_ids=True`` each token also gets the index of its word (from the fast tokenizer's word
    boundaries, ``-1`` for specials), which whole-word masking needs. A picklable class, so that
    ``datasets`` can fingerprint it and reuse the cache on the next run.
    """

    def __init__(self, tokenizer, text_column: str, block_size: int, word_ids: bool = False):
        self.tokenizer = tokenizer
        self.text_column = text_column
        self.word_ids = word_ids
        self.prefix, self.suffix = special_frame(tokenizer)
        self.separator = document_separator(tokenizer)
        self.body = block_size - len(self.prefix) - len(self.suffix)
        if self.body < 2:
            raise DataError(f"data.block_size {block_size} leaves no room for tokens between the special tokens")

    def __call__(self, batch: dict) -> dict:
        enc = self.tokenizer(batch[self.text_column], add_special_tokens=False)
        ids: list[int] = []
        words: list[int] = []
        word_base = 0
        for i, doc in enumerate(enc["input_ids"]):
            ids.extend(doc)
            ids.append(self.separator)
            if self.word_ids:
                doc_words = [-1 if w is None else w + word_base for w in enc.word_ids(i)]
                words.extend(doc_words)
                words.append(-1)
                word_base = max([word_base - 1, *doc_words]) + 1
        n_blocks = len(ids) // self.body
        body = self.body
        frame_words = ([-1] * len(self.prefix), [-1] * len(self.suffix))
        out = {"input_ids": [self.prefix + ids[k * body : (k + 1) * body] + self.suffix for k in range(n_blocks)]}
        if self.word_ids:
            out["word_ids"] = [frame_words[0] + words[k * body : (k + 1) * body] + frame_words[1] for k in range(n_blocks)]
        return out


def tokenize_and_pack(
    ds: Dataset | IterableDataset,
    tokenizer,
    text_column: str,
    block_size: int,
    word_ids: bool = False,
    num_proc: int | None = None,
    map_batch_size: int = 1000,
) -> Dataset | IterableDataset:
    """Packed ``input_ids`` blocks (and ``word_ids``); cached by ``datasets`` across runs."""
    packer = BlockPacker(tokenizer, text_column, block_size, word_ids)
    columns = ds.column_names
    kwargs = {}
    if not isinstance(ds, IterableDataset):
        kwargs = {"num_proc": num_proc, "desc": f"Tokenizing and packing into {block_size}-token blocks"}
    packed = ds.map(packer, batched=True, batch_size=map_batch_size, remove_columns=columns, **kwargs)
    if not isinstance(packed, IterableDataset) and len(packed) == 0:
        raise DataError(f"no {block_size}-token block could be packed from {len(ds)} documents: the text is too short")
    return packed


class TextCorpus:
    """A pretraining run's text: the raw splits, tokenized and packed as the run starts (cached by
    ``datasets``), or the blocks and tokenizer of a store that ``nlp-ssl prepare`` wrote (``data.prepared``)."""

    def __init__(self, cfg: TextDataConfig, seed: int = 0):
        self.cfg = cfg
        if cfg.prepared:
            from nlp_ssl.data.prepared import PreparedStore

            self.store, self.raw = PreparedStore(cfg), None
        else:
            self.store, self.raw = None, load_text_splits(cfg, seed=seed)

    def tokenizer(self, tokenizer_cfg, model_cfg=None):
        """The store's tokenizer, or :func:`~nlp_ssl.text.tokenizers.load_or_train_tokenizer`'s."""
        if self.store is not None:
            return self.store.tokenizer(tokenizer_cfg, model_cfg)
        from nlp_ssl.text.tokenizers import load_or_train_tokenizer

        return load_or_train_tokenizer(tokenizer_cfg, self.raw["train"], self.cfg.text_column, self.cfg.cache_dir, model_cfg)

    def blocks(self, tokenizer, word_ids: bool = False) -> dict:
        """``{"train", "validation"}`` packed ``block_size`` blocks (``word_ids`` too for whole-word masking)."""
        if self.store is not None:
            return self.store.blocks(word_ids)
        cfg = self.cfg
        return {split: tokenize_and_pack(ds, tokenizer, cfg.text_column, cfg.block_size, word_ids, cfg.num_proc)
                for split, ds in self.raw.items()}
