"""Accuracy as a local 🤗 ``evaluate`` metric, so ``evaluate.load(<this folder>)`` works offline.

Written for nlp_ssl (the Hub's ``accuracy`` script cannot be fetched here). It depends on numpy only,
because ``evaluate`` copies this file into its module cache and imports it from there.
"""

import datasets
import evaluate
import numpy as np

from nlp_ssl.errors import DataError

_DESCRIPTION = "Fraction of predictions equal to their reference label (optionally sample-weighted)."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids, one per prediction.
    sample_weight (list of float, optional): a weight per example; default 1 each.
Returns:
    accuracy (float): in [0, 1].
"""


class Accuracy(evaluate.Metric):
    """Share of exact matches between predicted and reference class ids."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, sample_weight=None):
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if predictions.size == 0:
            raise DataError("accuracy: no predictions to score")
        hits = (predictions == references).astype(np.float64)
        if sample_weight is None:
            return {"accuracy": float(hits.mean())}
        weights = np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != hits.shape:
            raise DataError(f"accuracy: {weights.size} sample weights for {hits.size} predictions")
        return {"accuracy": float((hits * weights).sum() / weights.sum())}
