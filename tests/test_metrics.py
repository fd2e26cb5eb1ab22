"""The metrics (nlp_ssl/metrics): each local evaluate module equals scipy / scikit-learn, and loads offline."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from nlp_ssl.errors import DataError
from nlp_ssl.metrics import METRICS_DIR, available_metrics, compute_classification_metrics, compute_scores, load_metric


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


# ----------------------------------------------------------------------------------------- metrics


def _random_predictions(seed, n=200, classes=7):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, classes, n)
    # Mostly right, sometimes a class that never occurs in the references.
    predictions = np.where(rng.random(n) < 0.6, references, rng.integers(0, classes + 2, n))
    return predictions, references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packaged_metrics_equal_scikit_learn(seed):
    predictions, references = _random_predictions(seed)
    accuracy = load_metric("accuracy").compute(predictions=predictions, references=references)
    assert accuracy["accuracy"] == pytest.approx(accuracy_score(references, predictions))
    f1 = load_metric("f1")
    for average in ("macro", "micro", "weighted"):
        ours = f1.compute(predictions=predictions, references=references, average=average)["f1"]
        assert ours == pytest.approx(f1_score(references, predictions, average=average, zero_division=0)), average
    subset = [0, 2, 5]
    ours = f1.compute(predictions=predictions, references=references, average="macro", labels=subset)["f1"]
    assert ours == pytest.approx(f1_score(references, predictions, average="macro", labels=subset, zero_division=0))


def test_metrics_accumulate_batches_and_reject_unknown_average():
    predictions, references = _random_predictions(3)
    f1 = load_metric("f1")
    f1.add_batch(predictions=predictions[:50], references=references[:50])
    f1.add_batch(predictions=predictions[50:], references=references[50:])
    assert f1.compute(average="weighted")["f1"] == pytest.approx(f1_score(references, predictions, average="weighted"))
    with pytest.raises(ValueError, match="average='samples'"):
        load_metric("f1").compute(predictions=[0, 1], references=[0, 1], average="samples")


def test_compute_classification_metrics_and_its_errors():
    predictions, references = _random_predictions(4)
    scores = compute_classification_metrics(predictions.tolist(), references.tolist())
    assert scores == pytest.approx(
        {
            "accuracy": accuracy_score(references, predictions),
            "macro_f1": f1_score(references, predictions, average="macro"),
        }
    )
    with pytest.raises(DataError, match="3 predictions but 2 references"):
        compute_classification_metrics([0, 1, 1], [0, 1])
    with pytest.raises(DataError, match="integer class ids"):
        compute_classification_metrics([0.5, 1.0], [0, 1])
    with pytest.raises(DataError, match="available: accuracy, f1"):
        load_metric("bleu")


def test_metrics_load_offline_in_a_fresh_process(tmp_path):
    """``evaluate.load(<folder>)`` must not touch the network: point the Hub at a dead port."""
    script = textwrap.dedent(
        f"""
        import evaluate
        from nlp_ssl.metrics import compute_classification_metrics
        direct = evaluate.load({str(METRICS_DIR / "accuracy")!r}).compute(predictions=[1, 0, 1], references=[1, 1, 1])
        print(direct["accuracy"], compute_classification_metrics([0, 1, 2, 2], [0, 1, 1, 2]))
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == str(2 / 3)
    assert "'macro_f1': 0.777" in result.stdout
