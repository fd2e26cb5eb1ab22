"""The GLUE tasks: how each is laid out on disk, how it is scored, and how its score is averaged.

Two layouts are read, the two that people have:

* the classic download (``download_glue_data.py``): ``<data_dir>/CoLA/train.tsv`` and ``dev.tsv``
  (no header), ``MRPC/`` (``Quality  #1 ID  #2 ID  #1 String  #2 String``), ``MNLI/dev_matched.tsv``
  and ``dev_mismatched.tsv``, ... Tab-separated with no quoting (texts hold bare ``"``).
* a local copy of the Hub dataset ``nyu-mll/glue``: ``<data_dir>/cola/train-00000-of-00001.parquet``,
  ``validation-*.parquet`` (MNLI: ``validation_matched``/``validation_mismatched``), labels as ids.

``data_dir=nyu-mll/glue`` loads the Hub dataset by name where the Hub is reachable. Every task comes
out the same way: ``text`` (``text_pair``) and ``label`` columns, labels as the Hub's class ids.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Value

from nlp_ssl.errors import DataError

HUB_NAME = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    """One task: its files, columns, classes (in the Hub's id order; None for regression) and scores."""

    name: str
    folder: str
    #: Classic tsv columns: header names (or positions, for CoLA, whose files have no header).
    text: str | int
    pair: str | int | None
    label: str | int
    #: Hub dataset columns.
    hub_text: str
    hub_pair: str | None
    names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    #: Dev sets: (name in results, classic file stem, Hub split).
    devs: tuple[tuple[str, str, str], ...] = (("", "dev", "validation"),)

    @property
    def regression(self) -> bool:
        return self.names is None


NLI = ("entailment", "not_entailment")
TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", "CoLA", 3, None, 1, "sentence", None, ("unacceptable", "acceptable"), ("matthews_correlation",)),
    GlueTask("sst2", "SST-2", "sentence", None, "label", "sentence", None, ("negative", "positive"), ("accuracy",)),
    GlueTask("mrpc", "MRPC", "#1 String", "#2 String", "Quality", "sentence1", "sentence2",
             ("not_equivalent", "equivalent"), ("f1", "accuracy")),
    GlueTask("stsb", "STS-B", "sentence1", "sentence2", "score", "sentence1", "sentence2", None, ("pearsonr", "spearmanr")),
    GlueTask("qqp", "QQP", "question1", "question2", "is_duplicate", "question1", "question2",
             ("not_duplicate", "duplicate"), ("f1", "accuracy")),
    GlueTask("mnli", "MNLI", "sentence1", "sentence2", "gold_label", "premise", "hypothesis",
             ("entailment", "neutral", "contradiction"), ("accuracy",),
             (("matched", "dev_matched", "validation_matched"), ("mismatched", "dev_mismatched", "validation_mismatched"))),
    GlueTask("qnli", "QNLI", "question", "sentence", "label", "question", "sentence", NLI, ("accuracy",)),
    GlueTask("rte", "RTE", "sentence1", "sentence2", "label", "sentence1", "sentence2", NLI, ("accuracy",)),
    GlueTask("wnli", "WNLI", "sentence1", "sentence2", "label", "sentence1", "sentence2", ("not_entailment", "entailment"),
             ("accuracy",)),
)}
#: Not GLUE: tasks the harness runs offline, by name only (data_scripts/prepare_wiki_pairs.py writes
#: ``WikiPairs`` in the classic layout: "do these two articles share a topic?").
OFFLINE_TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("wikipairs", "WikiPairs", "sentence1", "sentence2", "label", "sentence1", "sentence2",
             ("different_topic", "same_topic"), ("f1", "accuracy")),
)}


def get_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "")
    task = TASKS.get(key) or OFFLINE_TASKS.get(key)
    if task is None:
        raise DataError(f"glue task {name!r} is unknown; tasks: {', '.join(TASKS)} "
                        f"(offline stand-ins: {', '.join(OFFLINE_TASKS)})")
    return task


def result_key(metric: str, dev: str) -> str:
    """``accuracy`` for a task's one dev set, ``accuracy_matched`` / ``accuracy_mismatched`` for MNLI's."""
    return f"{metric}_{dev}" if dev else metric


def task_score(metrics: dict[str, float]) -> float:
    """A task's GLUE score: the mean of its metrics (MRPC's F1 and accuracy, MNLI's m and mm)."""
    return float(np.mean(list(metrics.values())))


def glue_average(scores: dict[str, float]) -> float:
    """The leaderboard's GLUE score: the mean over tasks of each task's mean metric."""
    return float(np.mean(list(scores.values())))


# ------------------------------------------------------------------------------------ reading


def find_layout(data_dir: str | Path, task: GlueTask) -> tuple[str, Path] | None:
    """("classic"|"parquet", task folder) where ``data_dir`` holds this task, else None."""
    root = Path(data_dir)
    classic = root / task.folder
    if (classic / "train.tsv").is_file():
        return "classic", classic
    hub = root / task.name
    if any(hub.glob("train*.parquet")):
        return "parquet", hub
    return None


def missing_reason(data_dir: str | Path, task: GlueTask) -> str:
    return f"no {task.folder}/train.tsv or {task.name}/train-*.parquet in {data_dir}"


def load_task(data_dir: str | Path, task: GlueTask) -> tuple[dict[str, Dataset], str]:
    """({"pool": train, "test": dev[, "test_<dev>": ...]}, how to name it in messages); ``pool`` and
    each dev set have ``text`` (``text_pair``) and ``label`` columns."""
    found = find_layout(data_dir, task)
    if found is None:
        raise DataError(missing_reason(data_dir, task))
    layout, folder = found
    read = _read_tsv if layout == "classic" else _read_parquet
    splits = {"pool": read(folder, "train", task)}
    for i, (dev, stem, hub_split) in enumerate(task.devs):
        splits["test" if i == 0 else f"test_{dev}"] = read(folder, stem if layout == "classic" else hub_split, task)
    return splits, f"GLUE {task.folder} ({layout}, {folder})"


def load_hub_task(name: str, task: GlueTask) -> tuple[dict[str, Dataset], str]:
    """The same splits from the Hub dataset (``nyu-mll/glue``), where the Hub is reachable."""
    import datasets

    from nlp_ssl.hub import check_hub_repo

    check_hub_repo(name, "dataset", "glue.data_dir")
    try:
        loaded = datasets.load_dataset(name, task.name)
    except Exception as error:  # noqa: BLE001 - offline, missing, gated: all mean "cannot use it"
        raise DataError(
            f"glue.data_dir {name}: not a local folder, and loading it from the Hub failed: {type(error).__name__}: {error}"
        ) from None
    splits = {"pool": _standard(loaded["train"], task, f"{name} {task.name} train")}
    for i, (dev, _stem, hub_split) in enumerate(task.devs):
        splits["test" if i == 0 else f"test_{dev}"] = _standard(loaded[hub_split], task, f"{name} {task.name} {hub_split}")
    return splits, f"GLUE {task.folder} (Hub {name})"


def _read_parquet(folder: Path, split: str, task: GlueTask) -> Dataset:
    import pyarrow.parquet as pq

    files = sorted(folder.glob(f"{split}-*.parquet")) or sorted(folder.glob(f"{split}.parquet"))
    if not files:
        raise DataError(f"{folder}: no {split}-*.parquet file")
    try:
        import pyarrow as pa

        table = pa.concat_tables([pq.read_table(f) for f in files])
    except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
        raise DataError(f"{files[0]}: not a readable parquet file ({error})") from None
    return _standard(Dataset(table), task, str(files[0]))


def _standard(ds: Dataset, task: GlueTask, where: str) -> Dataset:
    """Hub columns -> text/text_pair/label, checked."""
    wanted = [c for c in (task.hub_text, task.hub_pair, "label") if c is not None]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise DataError(f"{where}: column {missing[0]!r} not found; columns: {', '.join(ds.column_names)}")
    rows = {"text": ds[task.hub_text][:], "label": ds["label"][:]}
    if task.hub_pair:
        rows["text_pair"] = ds[task.hub_pair][:]
    return _build(rows, task, where, lambda i: f"row {i + 1}")


def _read_tsv(folder: Path, stem: str, task: GlueTask) -> Dataset:
    path = folder / f"{stem}.tsv"
    if not path.is_file():
        raise DataError(f"{path}: no such file (the {task.folder} folder has train.tsv)")
    with path.open(encoding="utf-8", newline="") as handle:
        lines = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    headerless = isinstance(task.label, int)
    header, body, first = (None, lines, 1) if headerless else (lines[0] if lines else [], lines[1:], 2)
    columns = {}
    for role, column in (("text", task.text), ("text_pair", task.pair), ("label", task.label)):
        if column is None:
            continue
        if headerless:
            columns[role] = column
        elif column in header:
            columns[role] = header.index(column)
        else:
            raise DataError(f"{path}: column {column!r} not found in the header ({' | '.join(header)})")
    width = max(columns.values()) + 1
    rows: dict[str, list] = {role: [] for role in columns}
    for offset, fields in enumerate(body):
        if len(fields) < width:
            raise DataError(f"{path} line {first + offset}: {len(fields)} tab-separated fields, {task.folder} needs {width}")
        for role, index in columns.items():
            rows[role].append(fields[index])
    return _build(rows, task, str(path), lambda i: f"line {first + i}")


def _build(rows: dict[str, list], task: GlueTask, where: str, row_name) -> Dataset:
    if not rows["label"]:
        raise DataError(f"{where}: no rows")
    for role in ("text", "text_pair"):
        for i, value in enumerate(rows.get(role, ())):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where} {row_name(i)}: {role} is empty or not text ({value!r})")
    labels = [_label(v, task, where, row_name, i) for i, v in enumerate(rows["label"])]
    feature = Value("float32") if task.regression else ClassLabel(names=list(task.names))
    columns = {k: v for k, v in rows.items() if k != "label"}
    columns["label"] = np.asarray(labels, dtype=np.float32 if task.regression else np.int64)
    features = {k: Value("string") for k in columns if k != "label"}
    from datasets import Features

    return Dataset.from_dict(columns, features=Features({**features, "label": feature}))


def _label(value, task: GlueTask, where: str, row_name, i: int):
    """A float score (regression), or a class id from an id (0/1) or a class name (``entailment``)."""
    text = value.strip() if isinstance(value, str) else value
    if task.regression:
        try:
            score = float(text)
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise DataError(f"{where} {row_name(i)}: label {value!r} is not a number ({task.folder} is regression)")
        return score
    if isinstance(text, str) and text in task.names:
        return task.names.index(text)
    try:
        code = int(text)
    except (TypeError, ValueError):
        code = -1
    if not 0 <= code < len(task.names) or (isinstance(text, float) and not text.is_integer()):
        raise DataError(f"{where} {row_name(i)}: label {value!r} is not one of {task.folder}'s classes "
                        f"{list(task.names)} or their ids 0-{len(task.names) - 1}")
    return code
