"""nlp_ssl.study.corpus_size: the corpora of the corpus-size curve, and its table and figure."""

import json
import re

import pytest

from nlp_ssl.errors import ConfigError
from nlp_ssl.study import corpus_size


@pytest.mark.parametrize("name, message", [
    ("kjv+wiki:0.1", "must start with wiki:<fraction>"),
    ("wiki:0", "the wiki fraction must be in (0, 1]"),
    ("wiki:abc", "the wiki fraction must be in (0, 1]"),
    ("wiki:0.5+bible", "'bible' is not one of ['kjv', 'python_docs']"),
])
def test_bad_corpus_names_are_refused(name, message):
    with pytest.raises(ConfigError, match="^" + re.escape(f"corpora: {name!r}")):
        corpus_size.parse_corpus(name)
    with pytest.raises(ConfigError) as error:
        corpus_size.parse_corpus(name)
    assert message in str(error.value)


def test_wiki_shares_are_nested_seeded_and_hold_no_test_article():
    from nlp_ssl.data.wiki import load_wiki_corpus

    small, large = corpus_size.corpus_texts("wiki:0.1", seed=0), corpus_size.corpus_texts("wiki:0.3", seed=0)
    train = load_wiki_corpus()["en_train"]
    assert len(small) == -(-len(train) // 10) and len(large) == -(-3 * len(train) // 10)
    assert large[: len(small)] == small  # nested: the 10% share opens the 30% one
    assert corpus_size.corpus_texts("wiki:0.1", seed=1) != small
    topics = {t for t, text in zip(train["topic"], train["text"]) if text in set(small)}
    assert len(topics) >= 10  # a random share, not the first topics of a sorted file
    assert not set(large) & set(load_wiki_corpus()["en_test"]["text"])


def fake_study(scratch, pretrained, method="pretrained_1200"):
    """A text study's results.json at k=32 with per-seed accuracies."""
    def cell(values):
        import numpy as np

        return {"test_accuracy": {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "n": len(values)}}

    gains = [p - s for p, s in zip(pretrained, scratch)]
    return {
        "labels": {"scratch": "from scratch", method: "pretrained"},
        "summary": {"scratch": {"32": cell(scratch)}, method: {"32": cell(pretrained)}},
        "gains": {method: {"32": {"per_seed": {str(i): g for i, g in enumerate(gains)}, "mean": sum(gains) / 3,
                                        "std": 0.01, "min": min(gains), "n": 3}}},
    }


def test_the_curve_table_and_figure(tmp_path):
    scratch = [0.5, 0.6, 0.55]
    points = [
        {"corpus": "wiki:0.1", "documents": 799, "tokens": 90_000, "pretraining": {},
         "results": fake_study(scratch, [0.6, 0.62, 0.6])},
        {"corpus": "wiki:1.0", "documents": 7981, "tokens": 900_000, "pretraining": {},
         "results": fake_study(scratch, [0.7, 0.75, 0.8])},
    ]
    rows = corpus_size.curve_rows(points, 32, [1200, 4800])  # no 4,800-step runs here: no rows for them
    assert [(r["corpus"], r["steps"]) for r in rows] == [("wiki:0.1", 1200), ("wiki:1.0", 1200)]
    assert rows[1]["gain"]["mean"] == pytest.approx(0.2) and rows[1]["gain"]["min"] == pytest.approx(0.15)
    reference = tmp_path / "minilm.json"
    accuracy = {"mean": 0.865, "std": 0.013, "n": 3}
    reference.write_text(json.dumps({"labels": {"checkpoint": "MiniLM, fine-tuned"},
                                     "summary": {"checkpoint": {"32": {"test_accuracy": accuracy}}}}))
    refs = corpus_size.references([str(reference)], 32)
    assert refs == {"MiniLM, fine-tuned": {"mean": 0.865, "std": 0.013, "n": 3}}
    table = corpus_size.markdown(rows, refs, 32, [0, 1, 2], ["- settings"])
    # The cells print as every study's report prints them (nlp_ssl.study.report.cell).
    assert "| wiki:1.0 | 7,981 | 900,000 | 1,200 | 55.0 ± 5.0 (n=3) | 75.0 ± 5.0 (n=3) | +20.0 ± 1.0 | +15.0 |" in table
    assert "- MiniLM, fine-tuned: 86.5 ± 1.3 (n=3)" in table
    corpus_size.plot(rows, refs, 32, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
