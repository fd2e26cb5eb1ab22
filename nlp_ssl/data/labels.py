"""Labelled data for fine-tuning and the few-label studies: load any table, fix the classes, sample k.

Every loader returns a ``datasets.Dataset`` whose label column is a ``ClassLabel``, so a model's
``num_labels`` and ``id2label`` come from the data, and a class id means the same thing in every
split. Mistakes in the data (a missing column, rows without a label) are reported with the file and
the rows at fault before any training starts.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict

from nlp_ssl.errors import DataError

#: File suffixes ``load_labeled_dataset`` reads, besides ``save_to_disk`` folders.
SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
#: How many offending rows an error message lists.
SHOWN_ROWS = 5

_INTEGER = re.compile(r"[+-]?\d+")


def load_labeled_dataset(
    source: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    *,
    split: str = "train",
    config_name: str | None = None,
    text_pair_column: str | None = None,
    regression: bool = False,
) -> Dataset:
    """Read a labelled csv, jsonl/json, parquet file, ``save_to_disk`` folder or Hub dataset.

    String labels become a ``ClassLabel`` whose names are the sorted distinct labels; integer labels
    keep their values (names ``"0"`` … ``"max"``); a ``ClassLabel`` column is kept as it is. In a CSV
    file, a label column whose every value is an integer is read as integers. ``split`` picks the
    split of a ``DatasetDict`` folder or a Hub dataset. Other columns are kept.

    ``text_pair_column`` names a second text column (sentence pairs), checked like the first.
    ``regression``: labels are numbers (float32 scores, e.g. STS-B similarity), not classes.
    """
    columns = _Columns(text_column, label_column, text_pair_column, regression)
    dataset, where, row_name = _read(source, split, config_name, columns)
    is_class_label = isinstance(dataset.features.get(label_column), ClassLabel)
    encoded = columns.check(dataset.column_names, lambda c: dataset[c][:], where, row_name, is_class_label)
    if encoded is None:
        return dataset
    return _replace_column(dataset, label_column, encoded[1], encoded[0])


def sample_k_per_class(dataset: Dataset, label_column: str, k: int | None, seed: int) -> Dataset:
    """Exactly ``k`` rows of every class present, in their original order; ``k=None`` or 0: all rows.

    Each class is shuffled by its own generator, seeded from ``seed`` and the class, so the rows
    picked for k are a subset of those picked for a larger k with the same seed: a few-label curve
    then adds examples instead of redrawing them, and its points differ only by the extra data.
    """
    if k is None or k == 0:
        return dataset
    return dataset.select(_k_per_class_rows(dataset, label_column, k, seed))


def few_label_split(
    pool: Dataset,
    k: int | None,
    validation_per_class: int,
    seed: int,
    validation_seed: int,
    where: str = "the labelled data",
    label_column: str = "label",
) -> tuple[Dataset, Dataset | None]:
    """(train, validation) for few-label fine-tuning, text or images alike.

    ``validation_per_class`` rows of every class are drawn first, with ``validation_seed``, then ``k``
    per class (None or 0: every other row) from the rest, with ``seed``. Validation comes first so that
    its rows do not depend on k, and the training rows stay nested in k for one seed. No validation
    (``validation_per_class=0``) gives ``None``. Checked before drawing: at least two classes, and
    enough rows in every class, each short class named.
    """
    k, v = k or 0, validation_per_class
    labels = _label_array(pool, label_column)
    feature = pool.features[label_column]
    names = list(feature.names) if isinstance(feature, ClassLabel) else sorted(set(labels.tolist()), key=str)
    codes = labels if isinstance(feature, ClassLabel) else np.asarray([names.index(x) for x in labels.tolist()])
    present = np.unique(codes)
    if len(present) < 2:
        shown = [names[int(c)] for c in present]
        raise DataError(f"{where}: the labelled data has {len(present)} class ({shown}); classification needs at least 2")
    counts = np.bincount(codes, minlength=len(names))
    need = k + v if k else v + 1
    short = [f"{names[c]!r} has {int(n)}" for c, n in enumerate(counts) if 0 < n < need or (n == 0 and k)]
    if short:
        raise DataError(
            f"{where}: {len(short)} class(es) have fewer than the {need} labelled examples that "
            f"k_per_class={k or 'all'} + validation_per_class={v} need: {'; '.join(short)}"
        )
    if not v:
        return sample_k_per_class(pool, label_column, k or None, seed), None
    held = _k_per_class_rows(pool, label_column, v, validation_seed)
    rest = pool.select(np.setdiff1d(np.arange(len(pool)), held))
    return sample_k_per_class(rest, label_column, k or None, seed), pool.select(held)


def _k_per_class_rows(dataset: Dataset, label_column: str, k: int, seed: int) -> np.ndarray:
    """Sorted row indices of :func:`sample_k_per_class`'s draw."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise DataError(f"k per class must be a positive integer, None or 0 (all rows), got {k!r}")
    labels = _label_array(dataset, label_column)
    feature = dataset.features[label_column]
    classes, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(classes))]
    short = [(_class_name(feature, c), len(m)) for c, m in zip(classes, members, strict=True) if len(m) < k]
    if short:
        listed = "; ".join(f"class {name!r} has {count}" for name, count in short)
        raise DataError(
            f"{label_column!r}: cannot sample k={k} examples per class, {len(short)} class(es) have fewer: {listed}"
        )
    chosen = []
    for value, rows in zip(classes, members, strict=True):
        class_key = zlib.crc32(repr(_class_name(None, value)).encode())
        generator = np.random.default_rng([int(seed) & 0xFFFF_FFFF_FFFF_FFFF, class_key])
        chosen.append(generator.permutation(rows)[:k])
    return np.sort(np.concatenate(chosen))


def drop_classes(dataset: Dataset, label_column: str, names: str | Iterable[str | int]) -> Dataset:
    """Remove the rows of the named classes and the classes themselves.

    On a ``ClassLabel`` column the remaining classes keep their order and are renumbered from 0, so
    a classifier gets no output for a class it never sees (the built-in topic task drops
    ``"Uncategorized"``). Integers name class ids there; on a plain column, names are label values.
    """
    names = [names] if isinstance(names, (str, int)) else list(names)
    if not names:
        return dataset
    labels = _label_array(dataset, label_column)
    feature = dataset.features[label_column]
    if not isinstance(feature, ClassLabel):
        present = set(labels.tolist())
        unknown = [n for n in names if n not in present]
        if unknown:
            raise DataError(
                f"{label_column!r}: cannot drop {unknown}: no such label; labels: {_preview(sorted(present, key=str))}"
            )
        dropped = set(names)
        keep = np.fromiter((v not in dropped for v in labels.tolist()), dtype=bool, count=len(labels))
        return _nonempty(dataset.select(np.flatnonzero(keep)), label_column, names)
    dropped = set()
    for name in names:
        if isinstance(name, str) and name in feature.names:
            dropped.add(feature.names.index(name))
        elif isinstance(name, (int, np.integer)) and not isinstance(name, bool) and 0 <= name < feature.num_classes:
            dropped.add(int(name))
        else:
            raise DataError(
                f"{label_column!r}: cannot drop {name!r}: no such class; classes: {_preview(feature.names)}"
            )
    kept = [i for i in range(feature.num_classes) if i not in dropped]
    renumber = np.full(feature.num_classes, -1, dtype=np.int64)
    renumber[kept] = np.arange(len(kept))
    rows = np.flatnonzero(renumber[labels] >= 0)
    subset = _nonempty(dataset.select(rows), label_column, names)
    return _replace_column(
        subset, label_column, renumber[labels[rows]], ClassLabel(names=[feature.names[i] for i in kept])
    )


# --------------------------------------------------------------------------------------- reading


class _Columns:
    """The text and label columns, and the checks a table must pass to be labelled text."""

    def __init__(self, text: str, label: str, pair: str | None = None, regression: bool = False):
        self.text, self.label, self.pair, self.regression = text, label, pair, regression

    def check(self, names: Sequence[str], values_of: Callable[[str], list], where: str, row_name, is_class_label: bool):
        """Raise the first problem found; return (feature, codes), or None for a ClassLabel column."""
        roles = [("text", self.text), ("text pair", self.pair), ("label", self.label)]
        for role, column in roles:
            if column is not None and column not in names:
                raise DataError(f"{where}: {role} column {column!r} not found; available columns: {', '.join(names)}")
        for column in (self.text, self.pair):
            if column is not None:
                _check_texts(values_of(column), where, column, row_name)
        labels = values_of(self.label)
        _check_labels_present(labels, where, self.label, row_name, is_class_label and not self.regression)
        if self.regression:
            if is_class_label:
                raise DataError(f"{where}: label column {self.label!r} holds classes, but regression needs numeric scores")
            return _float_labels(labels, where, self.label, row_name)
        if is_class_label:
            return None
        return _encode_labels(labels, where, self.label, row_name, untyped=where.lower().endswith(".csv"))


def _read(source, split: str, config_name: str | None, columns: _Columns) -> tuple[Dataset, str, Callable[[int], str]]:
    """(dataset, how to name the source in messages, how to name row i in messages)."""
    path = Path(source).expanduser()
    data_row = lambda i: f"row {i + 1}"  # noqa: E731 - rows count from 1, as a person reads them
    if path.is_dir():
        return _read_folder(path, split), str(path), data_row
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return _read_csv(path, (columns.text, columns.pair, columns.label)), str(path), data_row
        if suffix in (".jsonl", ".json"):
            dataset, json_row = _read_json(path, columns)
            return dataset, str(path), json_row
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                return Dataset(pq.read_table(path)), str(path), data_row
            except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
                raise DataError(f"{path}: not a readable parquet file ({error})") from None
        raise DataError(
            f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)} or a save_to_disk folder"
        )
    if path.suffix.lower() in SUFFIXES or str(source).startswith((".", "/", "~")):
        raise DataError(f"{source}: no such file or folder")
    return _read_hub(str(source), split, config_name), f"Hub dataset {source!r} split {split!r}", data_row


def _read_folder(path: Path, split: str) -> Dataset:
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(
            f"{path}: a folder that datasets' save_to_disk did not write (no dataset_info.json/state.json)"
        ) from None
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise DataError(f"{path}: no split {split!r}; splits: {', '.join(loaded)}")
        return loaded[split]
    return loaded


def _read_csv(path: Path, string_columns: Sequence[str]) -> Dataset:
    import pandas as pd

    try:
        header = pd.read_csv(path, nrows=0).columns
        # Text and labels are read as strings ("007" stays "007"); empty cells become missing values.
        frame = pd.read_csv(path, dtype={c: str for c in header if c in string_columns})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None
    frame = frame.astype(object).where(frame.notna(), None)
    return Dataset.from_dict({str(c): frame[c].tolist() for c in frame.columns})


def _read_json(path: Path, columns_wanted: _Columns) -> tuple[Dataset, Callable[[int], str]]:
    """JSON lines, or one JSON document: a list of objects or an object of objects (keyed by id).

    Also returns how to name row i in messages: its line for JSON lines, its position otherwise.
    """
    text = path.read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and whole and all(isinstance(v, dict) for v in whole.values()):
        whole = list(whole.values())
    if isinstance(whole, list):
        records = whole
        row_name = lambda i: f"record {i + 1}"  # noqa: E731
    else:
        records, lines = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"{path} line {number}: not valid JSON ({error.msg})") from None
            lines.append(number)
        row_name = lambda i: f"line {lines[i]}"  # noqa: E731
    columns: dict[str, list] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{path} {row_name(i)}: expected a JSON object, got {type(record).__name__}")
        for key in record:
            columns.setdefault(key, [None] * i)
        for key, values in columns.items():
            values.append(record.get(key))
    try:
        return Dataset.from_dict(columns), row_name
    except (TypeError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        # Mixed types in the text or label column: say which rows, as for any other table.
        columns_wanted.check(list(columns), columns.__getitem__, str(path), row_name, is_class_label=False)
        bad = next((k for k, v in columns.items() if len({type(x) for x in v if x is not None}) > 1), None)
        which = f"column {bad!r} mixes value types" if bad else "cannot build a table"
        raise DataError(f"{path}: {which} ({error})") from None


def _read_hub(name: str, split: str, config_name: str | None) -> Dataset:
    try:
        return datasets.load_dataset(name, config_name, split=split)
    except Exception as error:  # noqa: BLE001 - offline, missing, gated, bad split: all mean "can't use it"
        raise DataError(
            f"{name!r} is not a local file or folder, and loading it as a Hub dataset (split {split!r}) failed: "
            f"{type(error).__name__}: {error}"
        ) from None


# ------------------------------------------------------------------------------------ validating


def _is_missing(value) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _rows_message(rows: Sequence[int], row_name: Callable[[int], str]) -> str:
    shown = ", ".join(row_name(i) for i in rows[:SHOWN_ROWS])
    return f"{len(rows)} row(s): {shown}" + (", ..." if len(rows) > SHOWN_ROWS else "")


def _check_texts(texts: Sequence, where: str, column: str, row_name) -> None:
    missing = [i for i, t in enumerate(texts) if _is_missing(t)]
    if missing:
        raise DataError(f"{where}: text column {column!r} is missing or empty in {_rows_message(missing, row_name)}")
    not_text = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if not_text:
        raise DataError(
            f"{where}: text column {column!r} holds non-text values "
            f"(e.g. {texts[not_text[0]]!r}) in {_rows_message(not_text, row_name)}"
        )


def _check_labels_present(labels: Sequence, where: str, column: str, row_name, is_class_label: bool) -> None:
    """No row may lack a label; in a ``ClassLabel`` column, -1 is how datasets writes "no label"."""
    if not labels:
        raise DataError(f"{where}: no rows")
    missing = [i for i, v in enumerate(labels) if _is_missing(v) or (is_class_label and v < 0)]
    if missing:
        raise DataError(f"{where}: label column {column!r} has no label in {_rows_message(missing, row_name)}")


def _float_labels(labels: Sequence, where: str, column: str, row_name) -> tuple[datasets.Value, np.ndarray]:
    """Regression targets as float32; a value that is not a number is named with its row."""
    values = np.empty(len(labels), dtype=np.float32)
    for i, value in enumerate(labels):
        try:
            if isinstance(value, bool):
                raise TypeError
            values[i] = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: label column {column!r} {row_name(i)}: {value!r} is not a number (regression)") from None
        if not math.isfinite(values[i]):
            raise DataError(f"{where}: label column {column!r} {row_name(i)}: {value!r} is not a finite number")
    return datasets.Value("float32"), values


def _encode_labels(labels: Sequence, where: str, column: str, row_name, untyped: bool) -> tuple[ClassLabel, np.ndarray]:
    """Class ids for ``labels``: sorted names for strings, the values themselves for integers.

    In an untyped file (csv) every value is a string: all integers are ids, none are names, and a
    mix of both (``1`` beside ``cat``) is refused rather than read as one more class.
    """
    if untyped:
        numeric = [isinstance(v, str) and bool(_INTEGER.fullmatch(v.strip())) for v in labels]
        if all(numeric):
            labels = [int(v) for v in labels]
        elif any(numeric):
            i, j = numeric.index(True), numeric.index(False)
            raise DataError(
                f"{where}: label column {column!r} mixes class names and ids: {labels[j]!r} in "
                f"{row_name(j)} and {labels[i]!r} in {row_name(i)}"
            )
    kinds: dict[str, int] = {}
    for i, value in enumerate(labels):
        if isinstance(value, str):
            kinds.setdefault("str", i)
        elif isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
            kinds.setdefault("int", i)
        else:
            raise DataError(
                f"{where}: label column {column!r} {row_name(i)}: {value!r} is neither a class name nor a class id"
            )
    if len(kinds) > 1:
        raise DataError(
            f"{where}: label column {column!r} mixes class names and ids: {labels[kinds['str']]!r} in "
            f"{row_name(kinds['str'])} and {labels[kinds['int']]!r} in {row_name(kinds['int'])}"
        )
    if "str" in kinds:
        names = sorted(set(labels))
        index = {name: i for i, name in enumerate(names)}
        return ClassLabel(names=names), np.fromiter((index[v] for v in labels), dtype=np.int64, count=len(labels))
    codes = np.asarray(labels, dtype=np.int64)
    if codes.min() < 0:
        raise DataError(
            f"{where}: label column {column!r} {row_name(int(codes.argmin()))}: class id {codes.min()} is negative"
        )
    return ClassLabel(names=[str(i) for i in range(int(codes.max()) + 1)]), codes


def _label_array(dataset: Dataset, column: str) -> np.ndarray:
    if column not in dataset.column_names:
        raise DataError(f"label column {column!r} not found; available columns: {', '.join(dataset.column_names)}")
    values = dataset[column][:]
    _check_labels_present(
        values, "dataset", column, lambda i: f"row {i + 1}", isinstance(dataset.features[column], ClassLabel)
    )
    return np.asarray(values)  # an Arrow column holds one type, so this never mixes names and ids


def _class_name(feature, value):
    """How a person knows the class: its name for a ClassLabel id, else the plain value."""
    if isinstance(feature, ClassLabel):
        return feature.int2str(int(value))
    return value.item() if isinstance(value, np.generic) else value


def _preview(values: Sequence, limit: int = 20) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _nonempty(dataset: Dataset, column: str, names) -> Dataset:
    if len(dataset) == 0:
        raise DataError(f"{column!r}: dropping {names} leaves no rows")
    return dataset


def _replace_column(dataset: Dataset, column: str, values: np.ndarray, feature) -> Dataset:
    """``dataset`` with ``column`` set to ``values`` typed ``feature``, in the same column position."""
    order = dataset.column_names
    dtype = np.int64 if isinstance(feature, ClassLabel) else np.float32
    replaced = dataset.remove_columns(column).add_column(column, np.asarray(values, dtype=dtype), feature=feature)
    return replaced.select_columns(order)
