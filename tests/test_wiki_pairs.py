"""The offline "same topic?" pair task: labels that match the articles' topics, balanced, seeded."""

from datasets import Dataset

from nlp_ssl.data.wiki_pairs import first_sentence, topic_pairs

ARTICLES = Dataset.from_dict({
    "text": [f"Article {i} is about {t}. It says more. And more." for i, t in enumerate("aabbbcccc")] + ["Odd one. Out."],
    "topic": list("aabbbcccc") + ["Uncategorized"],
})


def test_pairs_are_labelled_by_topic_balanced_and_seeded():
    pairs = topic_pairs(ARTICLES, 400, seed=3)
    topic_of = {first_sentence(t): topic for t, topic in zip(ARTICLES["text"], ARTICLES["topic"])}
    assert all(r["text"] != r["text_pair"] for r in pairs)
    for row in pairs:
        assert row["label"] == int(topic_of[row["text"]] == topic_of[row["text_pair"]])
        assert "Uncategorized" not in (topic_of[row["text"]], topic_of[row["text_pair"]])
    assert 160 < sum(pairs["label"]) < 240
    assert pairs["text"] == topic_pairs(ARTICLES, 400, seed=3)["text"]
    assert pairs["text"] != topic_pairs(ARTICLES, 400, seed=4)["text"]
    assert pairs.features["label"].names == ["different_topic", "same_topic"]


def test_first_sentence_stops_at_the_first_sentence_end():
    assert first_sentence("Washington, D.C. is a city. It is large.") == "Washington, D.C. is a city."
    assert first_sentence("No end here") == "No end here"


def test_data_script_writes_a_task_the_glue_harness_reads(tmp_path, monkeypatch):
    import data_scripts.prepare_wiki_pairs as script
    from nlp_ssl.data.glue import get_task, load_task

    monkeypatch.setattr(script, "load_wiki_corpus", lambda cache_dir=None: {"en_train": ARTICLES, "en_test": ARTICLES})
    assert script.main(["--out", str(tmp_path), "--train", "60", "--test", "20", "--seed", "1"]) == 0
    splits, where = load_task(tmp_path, get_task("wikipairs"))
    assert "classic" in where and len(splits["pool"]) == 60 and len(splits["test"]) == 20
    assert splits["pool"]["text"] == topic_pairs(ARTICLES, 60, seed=1)["text"]
    assert splits["pool"]["label"] == topic_pairs(ARTICLES, 60, seed=1)["label"]
    assert splits["pool"].features["label"].names == ["different_topic", "same_topic"]
