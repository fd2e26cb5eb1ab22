"""Spearman rank correlation as a local 🤗 ``evaluate`` metric (STS-B is scored by it), loadable offline.

Written for nlp_ssl. Pearson correlation of the ranks, tied values sharing their mean rank (as
scipy does); NaN when either list is constant. Depends on numpy only, because ``evaluate`` copies
this file into its module cache.
"""

import datasets
import evaluate
import numpy as np

from nlp_ssl.errors import DataError

_DESCRIPTION = "Spearman's rank correlation between predicted and true scores, in [-1, 1]."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): true scores, one per prediction.
Returns:
    spearmanr (float): in [-1, 1]; NaN when either list is constant.
"""


def average_ranks(values) -> np.ndarray:
    """Ranks from 1, ties given the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [values.size]]) - 1
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = (first[group] + last[group]) / 2.0 + 1.0
    return ranks


class Spearmanr(evaluate.Metric):
    """Rank correlation: how well the predictions order the examples."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references):
        if len(predictions) < 2:
            raise DataError("spearmanr: needs at least 2 predictions")
        x, y = average_ranks(predictions), average_ranks(references)
        x, y = x - x.mean(), y - y.mean()
        norm = np.sqrt((x * x).sum() * (y * y).sum())
        if norm == 0:
            return {"spearmanr": float("nan")}
        return {"spearmanr": float(np.clip((x * y).sum() / norm, -1.0, 1.0))}
