"""``nlp_ssl.data.holdout``: the one hold-out rule for text corpora."""

import pytest
from datasets import Dataset

from nlp_ssl.data.holdout import first_rows, hold_out
from nlp_ssl.errors import ConfigError, DataError


def rows(n):
    return Dataset.from_dict({"i": list(range(n)), "book": [f"b{i // 7}" for i in range(n)]})


def test_rows_are_train_test_split_and_the_cap_takes_a_prefix_of_train():
    ds = rows(100)
    parts = ds.train_test_split(test_size=0.1, seed=3, shuffle=True)
    split = hold_out(ds, 0.1, 3, "x")
    assert list(split["validation"]["i"]) == list(parts["test"]["i"]) and list(split["train"]["i"]) == list(parts["train"]["i"])
    capped = hold_out(ds, 0.1, 3, "x", max_train=20)
    assert list(capped["train"]["i"]) == list(parts["train"]["i"])[:20]
    assert list(capped["validation"]["i"]) == list(parts["test"]["i"])
    assert sorted(list(split["train"]["i"]) + list(split["validation"]["i"])) == list(range(100))
    assert list(hold_out(ds, 0.1, 4, "x")["validation"]["i"]) != list(split["validation"]["i"])


def test_groups_are_held_out_whole_and_cover_the_fraction():
    ds = rows(200)
    split = hold_out(ds, 0.2, 0, "x", groups=list(ds["book"]))
    train_books, held_books = set(split["train"]["book"]), set(split["validation"]["book"])
    assert not train_books & held_books and len(held_books) >= 2
    assert 0.2 * 200 <= len(split["validation"]) < 0.2 * 200 + 7  # stops at the first group past the fraction
    assert len(split["train"]) + len(split["validation"]) == 200
    assert list(hold_out(ds, 0.2, 0, "x", groups=list(ds["book"]))["validation"]["i"]) == list(split["validation"]["i"])


def test_bad_fractions_and_tiny_data_are_one_clear_error():
    with pytest.raises(ConfigError, match=r"data.validation_split must be in \(0, 1\), got 1.0"):
        hold_out(rows(10), 1.0, 0, "x")
    with pytest.raises(DataError, match="my.jsonl: 1 document"):
        hold_out(rows(1), 0.5, 0, "my.jsonl")
    with pytest.raises(DataError, match="pairs: 1 group"):
        hold_out(rows(5), 0.5, 0, "pairs", groups=list(rows(5)["book"]))
    assert list(first_rows(rows(5), None)["i"]) == [0, 1, 2, 3, 4] and list(first_rows(rows(5), 2)["i"]) == [0, 1]
