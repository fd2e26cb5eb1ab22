"""Matthews correlation as a local 🤗 ``evaluate`` metric (CoLA is scored by it), loadable offline.

Written for nlp_ssl. The multi-class form from the confusion matrix's marginals:
``(c·s − Σ p_k·t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²))`` with c correct, s examples, p_k and t_k the
predicted and true counts of class k; 0 when either side is constant (the denominator is 0).
Depends on numpy only, because ``evaluate`` copies this file into its module cache.
"""

import datasets
import evaluate
import numpy as np

from nlp_ssl.errors import DataError

_DESCRIPTION = "Matthews correlation coefficient between predicted and true class ids, in [-1, 1]."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids, one per prediction.
Returns:
    matthews_correlation (float): in [-1, 1]; 0 when predictions or references are all one class.
"""


class MatthewsCorrelation(evaluate.Metric):
    """Correlation of predicted and true labels that stays honest on unbalanced classes."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if predictions.size == 0:
            raise DataError("matthews_correlation: no predictions to score")
        classes, codes = np.unique(np.concatenate([predictions, references]), return_inverse=True)
        predicted = np.bincount(codes[: predictions.size], minlength=classes.size).astype(np.float64)
        true = np.bincount(codes[predictions.size :], minlength=classes.size).astype(np.float64)
        samples = float(predictions.size)
        correct = float((predictions == references).sum())
        denominator = (samples**2 - (predicted**2).sum()) * (samples**2 - (true**2).sum())
        if denominator <= 0:
            return {"matthews_correlation": 0.0}
        return {"matthews_correlation": float((correct * samples - (predicted * true).sum()) / np.sqrt(denominator))}
