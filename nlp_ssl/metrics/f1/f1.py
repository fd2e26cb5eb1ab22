"""Multi-class F1 as a local 🤗 ``evaluate`` metric, so ``evaluate.load(<this folder>)`` works offline.

Written for nlp_ssl (the Hub's ``f1`` script cannot be fetched here). Per class, F1 is
``2·TP / (2·TP + FP + FN)``, which is 0 for a class that is never both predicted and true. The
classes are the union of the predicted and the reference ids unless ``labels`` names them. Depends on
numpy only, because ``evaluate`` copies this file into its module cache and imports it from there.
"""

import datasets
import evaluate
import numpy as np

from nlp_ssl.errors import DataError

_DESCRIPTION = "F1 score per class, averaged over classes (macro, weighted), over decisions (micro), or of one class (binary)."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids, one per prediction.
    average (str): "macro" (plain mean over classes, the default), "micro" (pool every decision;
        equals accuracy when each example has one label) or "weighted" (mean weighted by the number
        of true examples of each class).
        "binary": the F1 of class ``pos_label`` alone (MRPC and QQP are scored so).
    labels (list of int, optional): the classes to average over; default: every class seen in
        predictions or references.
    pos_label (int): the positive class for ``average="binary"``; default 1.
Returns:
    f1 (float): in [0, 1].
"""

AVERAGES = ("macro", "micro", "weighted", "binary")


class F1(evaluate.Metric):
    """Harmonic mean of precision and recall, averaged over classes."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="macro", labels=None, pos_label=1):
        if average not in AVERAGES:
            raise DataError(f"f1: average={average!r} is not one of {', '.join(AVERAGES)}")
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if predictions.size == 0:
            raise DataError("f1: no predictions to score")
        if average == "binary":
            labels = [pos_label]
        if labels is None:
            classes = np.union1d(predictions, references)
        else:
            classes = np.unique(np.asarray(labels, dtype=np.int64))
            if classes.size == 0:
                raise DataError("f1: labels=[] leaves no class to average over")
        tp, predicted, true = _counts(predictions, references, classes)
        fp, fn = predicted - tp, true - tp
        if average == "micro":
            denominator = 2 * tp.sum() + fp.sum() + fn.sum()
            return {"f1": float(2 * tp.sum() / denominator) if denominator else 0.0}
        denominators = 2 * tp + fp + fn
        per_class = np.divide(2 * tp, denominators, out=np.zeros_like(tp), where=denominators > 0)
        if average in ("macro", "binary"):
            return {"f1": float(per_class.mean())}
        support = tp + fn
        total = support.sum()
        return {"f1": float((per_class * support).sum() / total) if total else 0.0}


def _counts(predictions, references, classes):
    """Per class of ``classes`` (sorted): true positives, times predicted, times true."""

    def index(values):
        position = np.minimum(np.searchsorted(classes, values), len(classes) - 1)
        known = classes[position] == values
        return position, known

    predicted_at, predicted_known = index(predictions)
    true_at, true_known = index(references)
    hit = predicted_known & (predictions == references)
    size = len(classes)
    return (
        np.bincount(predicted_at[hit], minlength=size).astype(np.float64),
        np.bincount(predicted_at[predicted_known], minlength=size).astype(np.float64),
        np.bincount(true_at[true_known], minlength=size).astype(np.float64),
    )
