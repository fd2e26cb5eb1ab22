"""Labelled-data loading (every file format, missing labels and columns named), k-per-class sampling, dropping classes."""

import json

import datasets
import numpy as np
import pytest

from nlp_ssl.data.labels import drop_classes, load_labeled_dataset, sample_k_per_class
from nlp_ssl.errors import DataError

datasets.disable_progress_bars()


# ------------------------------------------------------------------------------------ labelled data


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _classes_dataset():
    """Class "a" 10 rows, "b" 6, "c" 8; ``id`` identifies a row."""
    labels = ["a"] * 10 + ["b"] * 6 + ["c"] * 8
    order = np.random.default_rng(0).permutation(len(labels))
    rows = [{"id": i, "text": f"text {i}", "label": labels[j]} for i, j in enumerate(order)]
    return datasets.Dataset.from_list(rows).cast_column("label", datasets.ClassLabel(names=["a", "b", "c"]))


def test_sample_k_per_class_exact_counts_seeded_and_nested():
    dataset = _classes_dataset()
    sample = sample_k_per_class(dataset, "label", 5, seed=0)
    assert np.bincount(sample["label"][:]).tolist() == [5, 5, 5]
    original = {row["id"]: row for row in dataset}
    assert all(original[row["id"]] == row for row in sample)  # whole rows, not relabelled
    ids = sample["id"][:]
    assert ids == sorted(ids)
    assert sample_k_per_class(dataset, "label", 5, seed=0)["id"][:] == ids
    assert sample_k_per_class(dataset, "label", 5, seed=1)["id"][:] != ids
    # A larger k with the same seed adds rows and keeps the ones already drawn.
    assert set(sample_k_per_class(dataset, "label", 3, seed=0)["id"][:]) < set(ids)
    assert len(sample_k_per_class(dataset, "label", None, seed=0)) == len(dataset)
    assert len(sample_k_per_class(dataset, "label", 0, seed=0)) == len(dataset)


def test_sample_k_per_class_names_the_short_class():
    with pytest.raises(DataError, match=r"k=7 .*class 'b' has 6"):
        sample_k_per_class(_classes_dataset(), "label", 7, seed=0)
    with pytest.raises(DataError, match="positive integer"):
        sample_k_per_class(_classes_dataset(), "label", -1, seed=0)
    with pytest.raises(DataError, match="'topic' not found; available columns: id, text, label"):
        sample_k_per_class(_classes_dataset(), "topic", 2, seed=0)


def test_string_labels_become_sorted_classes_and_int_labels_are_kept(tmp_path):
    rows = [{"text": "x", "label": "zebra"}, {"text": "y", "label": "ant"}, {"text": "z", "label": "moth"}]
    dataset = load_labeled_dataset(_write_jsonl(tmp_path / "s.jsonl", rows))
    assert dataset.features["label"].names == ["ant", "moth", "zebra"]
    assert dataset["label"][:] == [2, 0, 1]
    (tmp_path / "i.csv").write_text("label,text\n3,x\n1,y\n")
    dataset = load_labeled_dataset(tmp_path / "i.csv")
    assert dataset.column_names == ["label", "text"]
    assert dataset["label"][:] == [3, 1] and dataset.features["label"].num_classes == 4
    assert dataset["text"][:] == ["x", "y"]


def test_every_format_gives_the_same_dataset(tmp_path):
    rows = [{"text": f"t{i}", "topic": "ab"[i % 2], "extra": i} for i in range(6)]
    jsonl = load_labeled_dataset(_write_jsonl(tmp_path / "d.jsonl", rows), label_column="topic")
    (tmp_path / "d.json").write_text(json.dumps({f"title{i}": row for i, row in enumerate(rows)}))
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,topic,extra\n" + "".join(f"{r['text']},{r['topic']},{r['extra']}\n" for r in rows))
    jsonl.to_parquet(tmp_path / "d.parquet")
    datasets.DatasetDict(train=jsonl, test=jsonl.select([0])).save_to_disk(str(tmp_path / "folder"))
    for source in ("d.json", "d.csv", "d.parquet", "folder"):
        other = load_labeled_dataset(tmp_path / source, label_column="topic")
        assert other.features == jsonl.features, source
        assert other[:] == jsonl[:], source
    assert len(load_labeled_dataset(tmp_path / "folder", label_column="topic", split="test")) == 1
    with pytest.raises(DataError, match="no split 'dev'; splits: train, test"):
        load_labeled_dataset(tmp_path / "folder", label_column="topic", split="dev")


def test_missing_labels_name_the_file_and_rows(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("text,label\ngood,pos\nbad,\nfine,pos\nworse,  \nok,neg\n")
    with pytest.raises(DataError, match=r"labels\.csv: label column 'label' has no label in 2 row\(s\): row 2, row 4$"):
        load_labeled_dataset(csv_path)
    rows = [{"text": "a", "label": "p"}, {"text": "b"}, {"text": "c", "label": None}, {"text": "d", "label": "q"}]
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in rows[1:]))
    with pytest.raises(DataError, match=r"labels\.jsonl: .* 2 row\(s\): line 3, line 4$"):
        load_labeled_dataset(path)
    many = [{"text": "t", "label": None if i % 2 else "x"} for i in range(20)]
    with pytest.raises(DataError, match=r"10 row\(s\): line 2, line 4, line 6, line 8, line 10, \.\.\.$"):
        load_labeled_dataset(_write_jsonl(tmp_path / "many.jsonl", many))


def test_missing_columns_and_bad_values_are_named(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"sentence": "a", "label": "x"}, {"sentence": "b", "label": "y"}])
    with pytest.raises(
        DataError, match=r"d\.jsonl: label column 'topic' not found; available columns: sentence, label"
    ):
        load_labeled_dataset(path, text_column="sentence", label_column="topic")
    with pytest.raises(DataError, match=r"d\.jsonl: text column 'text' not found; available columns: sentence, label"):
        load_labeled_dataset(path)
    mixed = _write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": 3}])
    with pytest.raises(DataError, match=r"mixes class names and ids: 'x' in line 1 and 3 in line 2"):
        load_labeled_dataset(mixed)
    empty_text = _write_jsonl(tmp_path / "e.jsonl", [{"text": "a", "label": "x"}, {"text": " ", "label": "y"}])
    with pytest.raises(DataError, match=r"text column 'text' is missing or empty in 1 row\(s\): line 2"):
        load_labeled_dataset(empty_text)
    with pytest.raises(DataError, match="no such file"):
        load_labeled_dataset(tmp_path / "absent.csv")
    (tmp_path / "d.txt").write_text("a\n")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        load_labeled_dataset(tmp_path / "d.txt")


def test_drop_classes_renumbers_the_rest():
    dataset = _classes_dataset()
    kept = drop_classes(dataset, "label", ["b"])
    assert kept.features["label"].names == ["a", "c"]
    assert len(kept) == 18
    original = {row["id"]: dataset.features["label"].int2str(row["label"]) for row in dataset}
    assert all(original[row["id"]] == kept.features["label"].int2str(row["label"]) for row in kept)
    assert kept.column_names == dataset.column_names
    with pytest.raises(DataError, match="cannot drop 'Uncategorized': no such class; classes: 'a', 'b', 'c'"):
        drop_classes(dataset, "label", ["Uncategorized"])
    plain = datasets.Dataset.from_dict({"label": ["x", "y", "x"]})
    assert drop_classes(plain, "label", "x")["label"][:] == ["y"]
