"""The GLUE metrics (nlp_ssl/metrics): each local evaluate module equals scipy / scikit-learn."""

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from nlp_ssl.errors import DataError
from nlp_ssl.metrics import available_metrics, compute_scores, load_metric


def _classes(seed, n=300, classes=3):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, classes, n)
    predictions = np.where(rng.random(n) < 0.5, references, rng.integers(0, classes + 1, n))
    return predictions, references


def _scores(seed, n=250, ties=False):
    rng = np.random.default_rng(seed)
    references = rng.normal(size=n)
    predictions = 0.6 * references + rng.normal(size=n)
    if ties:  # STS-B gold scores are multiples of 0.2: many ties
        references, predictions = np.round(references * 2) / 2, np.round(predictions * 2) / 2
    return predictions, references


def test_every_glue_metric_is_packaged():
    assert {"accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr"} <= set(available_metrics())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("classes", [2, 5])
def test_classification_metrics_equal_scikit_learn(seed, classes):
    predictions, references = _classes(seed, classes=classes)
    mcc = load_metric("matthews_correlation").compute(predictions=predictions, references=references)
    assert mcc["matthews_correlation"] == pytest.approx(matthews_corrcoef(references, predictions), abs=1e-12)
    binary = load_metric("f1").compute(predictions=predictions, references=references, average="binary")["f1"]
    assert binary == pytest.approx(f1_score(references, predictions, labels=[1], average="macro", zero_division=0), abs=1e-12)
    if classes == 2:
        two = np.minimum(predictions, 1)
        assert load_metric("f1").compute(predictions=two, references=references, average="binary")["f1"] == pytest.approx(
            f1_score(references, two, average="binary"), abs=1e-12
        )
    scores = compute_scores(["accuracy", "f1", "macro_f1", "matthews_correlation"], predictions, references)
    assert scores["accuracy"] == pytest.approx(accuracy_score(references, predictions), abs=1e-12)
    assert scores["macro_f1"] == pytest.approx(f1_score(references, predictions, average="macro", zero_division=0), abs=1e-12)
    assert scores["matthews_correlation"] == pytest.approx(mcc["matthews_correlation"], abs=1e-12)


def test_matthews_is_zero_when_one_side_is_constant_as_in_scikit_learn():
    references = np.array([0, 1, 1, 0, 1])
    constant = np.ones(5, dtype=int)
    ours = load_metric("matthews_correlation").compute(predictions=constant, references=references)["matthews_correlation"]
    assert ours == matthews_corrcoef(references, constant) == 0.0
    perfect = load_metric("matthews_correlation").compute(predictions=1 - references, references=references)
    assert perfect["matthews_correlation"] == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_correlations_equal_scipy(seed, ties):
    predictions, references = _scores(seed, ties=ties)
    pearson = load_metric("pearsonr").compute(predictions=predictions, references=references)["pearsonr"]
    spearman = load_metric("spearmanr").compute(predictions=predictions, references=references)["spearmanr"]
    assert pearson == pytest.approx(pearsonr(predictions, references)[0], abs=1e-10)
    assert spearman == pytest.approx(spearmanr(predictions, references)[0], abs=1e-10)
    assert compute_scores(["pearsonr", "spearmanr"], predictions, references) == pytest.approx(
        {"pearsonr": pearson, "spearmanr": spearman}
    )


def test_spearman_differs_from_pearson_on_a_monotone_curve():
    x = np.linspace(0, 3, 40)
    assert load_metric("spearmanr").compute(predictions=np.exp(x), references=x)["spearmanr"] == pytest.approx(1.0)
    assert load_metric("pearsonr").compute(predictions=np.exp(x), references=x)["pearsonr"] < 0.95


def test_correlation_of_a_constant_is_nan_as_in_scipy():
    assert np.isnan(load_metric("pearsonr").compute(predictions=[1.0, 1.0, 1.0], references=[0.0, 1.0, 2.0])["pearsonr"])
    assert np.isnan(load_metric("spearmanr").compute(predictions=[1.0, 2.0, 3.0], references=[2.0, 2.0, 2.0])["spearmanr"])


def test_compute_scores_rejects_unknown_names_and_mismatched_lengths():
    with pytest.raises(DataError, match=r"unknown score\(s\) \['bleu'\]"):
        compute_scores(["bleu"], [1], [1])
    with pytest.raises(DataError, match="3 predictions but 2 references"):
        compute_scores(["accuracy"], [0, 1, 1], [0, 1])
