"""The line of a local jsonl or csv file that a reader would choke on, named before training starts.

``datasets`` reports a malformed line as "in row 200" of a block it happened to read, and a streamed
file's ``null`` or number in the text column reaches the tokenizer mid-run as a ``TypeError``. A
streamed file is therefore read once by pyarrow's parser before training (C++, hundreds of MB a
second, once per version of the file: a clean result is remembered in the cache); whenever a reader
fails, a plain Python pass finds the first bad line and says what is wrong with it.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from nlp_ssl.errors import DataError

#: Part of what a clean result is remembered under: a stricter check re-reads files once.
CHECKS_VERSION = 1
#: Suffixes whose lines this module reads (``.txt`` files have no syntax to get wrong).
CHECKED = {".jsonl": "json", ".json": "json", ".csv": "csv"}


def first_bad_line(path: Path, column: str) -> tuple[int, str] | None:
    """(1-based line, what is wrong) of the first line that is not a row with text in ``column``."""
    kind = CHECKED.get(path.suffix.lower())
    with path.open(encoding="utf-8", errors="replace", newline="" if kind == "csv" else None) as f:
        if kind == "json":
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    return number, f"not valid JSON ({e.msg}, column {e.colno})"
                problem = _text_problem(row, column)
                if problem:
                    return number, problem
        elif kind == "csv":
            reader = csv.reader(f)
            header = next(reader, None) or []
            at = header.index(column) if column in header else None
            line = reader.line_num
            try:
                for row in reader:
                    if len(row) != len(header):
                        return line + 1, f"{len(row)} fields where the header has {len(header)}"
                    if at is not None and not row[at]:
                        return line + 1, f"field {column!r} is empty"
                    line = reader.line_num
            except csv.Error as e:
                return line + 1, f"not valid CSV ({e})"
    return None


def _text_problem(row, column: str) -> str | None:
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object with a {column!r} field"
    if column not in row:
        return f"field {column!r} missing"
    value = row[column]
    if value is None:
        return f"field {column!r} is null"
    if not isinstance(value, str):
        return f"field {column!r} holds {json.dumps(value)[:40]}, not text"
    return None


def raise_for_bad_line(path: Path, column: str, where: str) -> None:
    """Raise the one-line error for the first bad line of ``path``, if it has one."""
    found = first_bad_line(path, column) if path.suffix.lower() in CHECKED else None
    if found:
        raise DataError(f"{where} line {found[0]}: {found[1]}")


def check_streamed_file(path: Path, column: str, where: str, cache: Path) -> None:
    """Read ``path`` once with pyarrow before a run streams it; any bad line is one error naming it."""
    kind = CHECKED.get(path.suffix.lower())
    if kind is None:
        return
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{column}|{CHECKS_VERSION}"
    stamp = hashlib.sha256(key.encode()).hexdigest()[:24]
    marker = cache / "checked-files" / stamp
    if marker.exists():
        return
    if not _parses_cleanly(path, kind, column):
        raise_for_bad_line(path, column, where)
        raise DataError(f"{where}: pyarrow cannot read it as {kind} (no single line is to blame: check its encoding)")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _parses_cleanly(path: Path, kind: str, column: str) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv
    import pyarrow.json

    try:
        reader = pyarrow.json.open_json(path) if kind == "json" else pyarrow.csv.open_csv(path)
        for batch in reader:
            index = batch.schema.get_field_index(column)
            if index < 0:
                return True  # a missing column is the loader's message (it lists the columns)
            values = batch.column(index)
            text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
            if values.null_count or (kind == "json" and not text):  # a csv column of numbers: the loader's message
                return False
            if kind == "csv" and text and pc.any(pc.equal(values, "")).as_py():  # read as None by datasets' csv reader
                return False
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return False
    return True
