"""nlp_ssl.data.image_splits and the few-label split it shares with text (nlp_ssl.data.labels.few_label_split)."""

import re

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value

from nlp_ssl.data.image_splits import LabeledImagesConfig, labelled_splits
from nlp_ssl.data.labels import few_label_split, sample_k_per_class
from nlp_ssl.errors import DataError


def pool(n_per_class=(30, 25, 40), seed=0):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(n_per_class)), n_per_class))
    features = Features({"x": Value("int64"), "label": ClassLabel(names=[f"c{i}" for i in range(len(n_per_class))])})
    return Dataset.from_dict({"x": np.arange(len(labels)), "label": labels}, features=features)


def reference_split(ds, k, v, seed, validation_seed):
    """The draw as both recipes wrote it before it was shared: validation by row id first, then k of the rest."""
    numbered = ds.add_column("_row", np.arange(len(ds)))
    validation = sample_k_per_class(numbered, "label", v, validation_seed)
    held = np.zeros(len(ds), dtype=bool)
    held[np.asarray(validation["_row"])] = True
    train = sample_k_per_class(ds.select(np.flatnonzero(~held)), "label", k, seed)
    return train["x"], validation["x"]


@pytest.mark.parametrize("k, v, seed, validation_seed", [(5, 3, 0, 1234), (10, 2, 7, 1_000_010), (20, 5, 3, 3)])
def test_few_label_split_draws_what_the_recipes_drew(k, v, seed, validation_seed):
    ds = pool()
    train, validation = few_label_split(ds, k, v, seed, validation_seed)
    assert (train["x"], validation["x"]) == reference_split(ds, k, v, seed, validation_seed)
    assert np.bincount(train["label"]).tolist() == [k] * 3 and np.bincount(validation["label"]).tolist() == [v] * 3
    assert not set(train["x"]) & set(validation["x"])


def test_validation_does_not_depend_on_k_and_training_rows_are_nested_in_k():
    ds = pool()
    small_train, small_val = few_label_split(ds, 4, 3, seed=1, validation_seed=99)
    big_train, big_val = few_label_split(ds, 12, 3, seed=1, validation_seed=99)
    assert small_val["x"] == big_val["x"]
    assert set(small_train["x"]) < set(big_train["x"])
    other_seed, _ = few_label_split(ds, 4, 3, seed=2, validation_seed=99)
    assert other_seed["x"] != small_train["x"]


def test_few_label_split_without_validation_or_k():
    ds = pool()
    train, validation = few_label_split(ds, None, 0, seed=0, validation_seed=0)
    assert validation is None and train["x"] == ds["x"]
    train, validation = few_label_split(ds, 0, 4, seed=0, validation_seed=5)
    assert len(train) == len(ds) - 12 and len(validation) == 12


@pytest.mark.parametrize(
    "sizes, k, v, message",
    [
        ((30, 4, 40), 3, 2,
         "1 class(es) have fewer than the 5 labelled examples that k_per_class=3 + validation_per_class=2 need: 'c1' has 4"),
        ((30,), 3, 2, "the labelled data has 1 class (['c0']); classification needs at least 2"),
    ],
)
def test_few_label_split_names_what_is_short(sizes, k, v, message):
    with pytest.raises(DataError, match="^" + re.escape(f"pool.json: {message}") + "$"):
        few_label_split(pool(sizes), k, v, seed=0, validation_seed=0, where="pool.json")


def test_labelled_images_are_seeded_disjoint_and_balanced():
    def splits(seed):
        data = LabeledImagesConfig(source="digits", test_source="digits", k_per_class=5, validation_per_class=3)
        return labelled_splits(data, seed)

    a, b, c = splits(0), splits(0), splits(1)
    assert np.bincount(a["train"]["label"]).tolist() == [5] * 10
    assert np.bincount(a["validation"]["label"]).tolist() == [3] * 10
    pixels = lambda ds: {np.asarray(im).tobytes() for im in ds["image"]}  # noqa: E731
    assert not pixels(a["train"]) & pixels(a["validation"])
    assert pixels(a["train"]) == pixels(b["train"]) and pixels(a["train"]) != pixels(c["train"])
    # Validation has its own seed stream (seed + VALIDATION_SEED_OFFSET): the same images for any k.
    bigger = labelled_splits(LabeledImagesConfig(source="digits", test_source="digits", k_per_class=9, validation_per_class=3), 0)
    assert pixels(bigger["validation"]) == pixels(a["validation"]) and pixels(a["train"]) < pixels(bigger["train"])
