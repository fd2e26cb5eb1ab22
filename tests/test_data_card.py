"""Model-card data fields: the licence a built-in corpus carries, Hub datasets by id, nothing for local files."""

from nlp_ssl.data.card import data_card
from nlp_ssl.training.reporting import RunDescription, write_model_card


def test_data_card_fields(tmp_path, monkeypatch):
    assert data_card("builtin:wiki") == {"license": "cc-by-sa-4.0"}
    assert data_card("wiki") == {"license": "cc-by-sa-4.0"}
    assert data_card("builtin:wiki", train_file="mine.jsonl") == {}
    assert data_card("fashion_mnist") == {"datasets": ["zalando-datasets/fashion_mnist"]}
    assert data_card("wikimedia/wikipedia") == {"datasets": ["wikimedia/wikipedia"]}
    assert data_card("kjv") == {} and data_card(None) == {}
    (tmp_path / "user" / "corpus").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert data_card("user/corpus") == {}  # a local save_to_disk folder, not the Hub id it looks like


def test_card_metadata_carries_the_data_license(tmp_path):
    write_model_card(tmp_path, RunDescription(objective="mlm", pipeline_tag="fill-mask", **data_card("builtin:wiki")),
                     {"eval_loss": 1.0}, {}, None, None)
    head = (tmp_path / "README.md").read_text().split("---")[1]
    assert "license: cc-by-sa-4.0" in head and "http" not in head
