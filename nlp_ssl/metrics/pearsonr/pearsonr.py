"""Pearson correlation as a local 🤗 ``evaluate`` metric (STS-B is scored by it), loadable offline.

Written for nlp_ssl. Undefined (NaN, as scipy gives) when either list is constant. Depends on numpy
only, because ``evaluate`` copies this file into its module cache.
"""

import datasets
import evaluate
import numpy as np

from nlp_ssl.errors import DataError

_DESCRIPTION = "Pearson's linear correlation between predicted and true scores, in [-1, 1]."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): true scores, one per prediction.
Returns:
    pearsonr (float): in [-1, 1]; NaN when either list is constant.
"""


def pearson(x, y) -> float:
    """Centred dot product over the product of norms, in float64."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    if norm == 0:
        return float("nan")
    return float(np.clip((x * y).sum() / norm, -1.0, 1.0))


class Pearsonr(evaluate.Metric):
    """Linear correlation of predictions with references."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references):
        if len(predictions) < 2:
            raise DataError("pearsonr: needs at least 2 predictions")
        return {"pearsonr": pearson(predictions, references)}
