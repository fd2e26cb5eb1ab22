"""Classification metrics as local 🤗 ``evaluate`` modules that ship inside the package.

``evaluate.load("accuracy")`` fetches a script from the Hub; loading the folders next to this file by
path needs no network and takes milliseconds, so evaluation works offline and in CI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nlp_ssl.errors import DataError

METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> list[str]:
    """Names ``load_metric`` accepts: the folders here that hold a ``<name>/<name>.py`` script."""
    return sorted(p.parent.name for p in METRICS_DIR.glob("*/*.py") if p.stem == p.parent.name)


#: Scores a fine-tuning run can report: name -> (metric module, compute() arguments, regression?).
SCORES = {
    "accuracy": ("accuracy", {}, False),
    "f1": ("f1", {"average": "binary", "pos_label": 1}, False),
    "macro_f1": ("f1", {"average": "macro"}, False),
    "matthews_correlation": ("matthews_correlation", {}, False),
    "pearsonr": ("pearsonr", {}, True),
    "spearmanr": ("spearmanr", {}, True),
}


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of the packaged metric ``name`` (e.g. ``"accuracy"``, ``"pearsonr"``), by local path.

    Keeps predictions in memory by default (no cache files, no file locks) unless ``num_process``
    asks for a distributed evaluation, which needs the files.
    """
    import evaluate  # slow to import; only callers that score need it

    script = METRICS_DIR / name / f"{name}.py"
    if not script.is_file():
        raise DataError(f"metric {name!r} is not packaged with nlp_ssl; available: {', '.join(available_metrics())}")
    kwargs.setdefault("keep_in_memory", kwargs.get("num_process", 1) == 1)
    return evaluate.load(str(script.parent), **kwargs)


def compute_classification_metrics(predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (the mean F1 of the classes seen in either list) of class ids."""
    predictions = _class_ids(predictions, "predictions")
    references = _class_ids(references, "references")
    if len(predictions) != len(references):
        raise DataError(f"metrics: {len(predictions)} predictions but {len(references)} references")
    if len(predictions) == 0:
        raise DataError("metrics: no predictions to score (empty evaluation set?)")
    accuracy = load_metric("accuracy").compute(predictions=predictions, references=references)
    f1 = load_metric("f1").compute(predictions=predictions, references=references, average="macro")
    return {"accuracy": accuracy["accuracy"], "macro_f1": f1["f1"]}


def compute_scores(names: Sequence[str], predictions, references) -> dict[str, float]:
    """Each score of ``names`` (keys of ``SCORES``: ``f1`` is the positive class's, ``macro_f1`` the
    mean over classes) for class ids, or for float scores when the names are regression ones."""
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise DataError(f"metrics: unknown score(s) {unknown}; known: {', '.join(SCORES)}")
    if len(predictions) != len(references):
        raise DataError(f"metrics: {len(predictions)} predictions but {len(references)} references")
    if len(predictions) == 0:
        raise DataError("metrics: no predictions to score (empty evaluation set?)")
    out = {}
    for name in names:
        module, kwargs, regression = SCORES[name]
        if regression:
            pred, ref = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
        else:
            pred, ref = _class_ids(predictions, "predictions"), _class_ids(references, "references")
        result = load_metric(module).compute(predictions=pred, references=ref, **kwargs)
        out[name] = float(result[module])
    return out


def _class_ids(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise DataError(f"metrics: {name} must be one class id per example, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not (np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0)):
            raise DataError(f"metrics: {name} must be integer class ids, got dtype {array.dtype} (e.g. {array[0]!r})")
    return array.astype(np.int64)
