"""Contrastive few-label fine-tuning (``finetune.mode=contrastive``: nlp_ssl/objectives/label_pairs.py,
tasks/contrastive_classification.py, finetune_contrastive.py): partners drawn per example, the losses by
hand, and from the CLI a run that resumes exactly and saves a classifier that pipeline() loads and that
predicts what the run scored."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    GPT2Config,
    GPT2ForSequenceClassification,
    ModernBertConfig,
    ModernBertForSequenceClassification,
)

from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives.label_pairs import LabelPartners, PartnerCollator
from nlp_ssl.objectives.text_classification import ClassificationCollator
from nlp_ssl.tasks.contrastive_classification import (
    ContrastiveClassificationTask,
    classifier_layer,
    cosine_pair_sums,
    last_token,
)
from nlp_ssl.text.contrastive_finetuning import ContrastiveFinetuneConfig
from tests.helpers import ROOT, run_killed_and_resumed, start_cli, write_jsonl

TOKENIZER = ROOT / "tests" / "data" / "tokenizers" / "wordpiece"


def labelled_rows(n_per_class: int = 5, classes: int = 3, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"input_ids": [2, *rng.integers(5, 900, size=int(rng.integers(3, 9))).tolist(), 3], "label": c}
            for c in range(classes) for _ in range(n_per_class)]


# --------------------------------------------------------------------------------------- partners


def test_a_partner_is_drawn_per_example_and_seeded():
    rows = labelled_rows()
    partners = LabelPartners(rows, seed=7)
    together = partners.draw(rows)
    assert [partners.draw([row])[0] for row in rows] == together  # whatever the batch
    assert partners.draw(rows[::-1]) == together[::-1]
    assert LabelPartners(rows, seed=7).draw(rows) == together  # the same seed draws the same
    assert LabelPartners(rows, seed=8).draw(rows) != together
    partners.set_epoch(1)
    assert partners.draw(rows) != together  # a new epoch, new partners


def test_supcon_partners_are_other_texts_of_the_class_and_setfit_pairs_are_half_negative():
    rows = labelled_rows(n_per_class=40, classes=4)
    for seed in range(3):
        drawn = LabelPartners(rows, seed=seed, positive_share=1.0).draw(rows)
        assert all(p["label"] == r["label"] and p["input_ids"] != r["input_ids"] for r, p in zip(rows, drawn))
        assert len({tuple(p["input_ids"]) for p in drawn}) > len(rows) // 2  # spread over the class, not one favourite
        negatives = LabelPartners(rows, seed=seed, positive_share=0.0).draw(rows)
        assert all(p["label"] != r["label"] for r, p in zip(rows, negatives))
        half = LabelPartners(rows, seed=seed, positive_share=0.5).draw(rows)
        same = np.mean([p["label"] == r["label"] for r, p in zip(rows, half)])
        assert 0.35 < same < 0.65


def test_an_example_alone_in_its_class_is_its_own_partner():
    rows = labelled_rows(n_per_class=1, classes=2)
    drawn = LabelPartners(rows, seed=0).draw(rows)
    assert drawn == rows  # the two views of it then differ by dropout only


def test_the_batch_is_the_examples_then_their_partners(tokenizer):
    rows = labelled_rows()
    collator = PartnerCollator(ClassificationCollator(tokenizer), LabelPartners(rows, seed=1))
    batch = collator(rows[:4])
    partners = LabelPartners(rows, seed=1).draw(rows[:4])
    assert batch["input_ids"].shape[0] == 8
    assert batch["labels"].tolist() == [r["label"] for r in rows[:4]] + [-100] * 4
    assert batch["groups"].tolist() == [r["label"] for r in rows[:4]] + [p["label"] for p in partners]
    assert batch["partner"].tolist() == [False] * 4 + [True] * 4
    n = len(partners[2]["input_ids"])
    assert batch["input_ids"][6, :n].tolist() == partners[2]["input_ids"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


# ---------------------------------------------------------------------------------- the classifier


def tiny_classifier(kind: str, labels: int = 3):
    torch.manual_seed(0)
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1,
                                                        num_attention_heads=2, intermediate_size=64, num_labels=labels))
    if kind == "modernbert":
        return ModernBertForSequenceClassification(ModernBertConfig(
            vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            num_labels=labels, pad_token_id=0))
    return GPT2ForSequenceClassification(GPT2Config(vocab_size=1000, n_embd=32, n_layer=1, n_head=2, num_labels=labels,
                                                    pad_token_id=0))


@pytest.mark.parametrize("kind", ["bert", "modernbert", "gpt2"])
def test_the_features_are_what_the_saved_classifier_reads(kind):
    model = tiny_classifier(kind).eval()
    layer = classifier_layer(model)
    seen = []
    hook = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 20, 21, 3, 0]])
    mask = (ids != 0).long()
    logits = model(input_ids=ids, attention_mask=mask).logits
    hook.remove()
    features = seen[0] if seen[0].ndim == 2 else last_token(seen[0], mask)  # GPT-2 scores every position
    assert features.shape == (2, 32) and torch.allclose(layer(features), logits, atol=1e-6)


def _by_hand_supcon(features: np.ndarray, groups: list[int], temperature: float) -> tuple[float, int]:
    z = features / np.linalg.norm(features, axis=1, keepdims=True)
    total, anchors = 0.0, 0
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and groups[p] == groups[i]]
        if not positives:
            continue
        denominator = sum(math.exp(z[i] @ z[a] / temperature) for a in range(len(z)) if a != i)
        total += -sum(math.log(math.exp(z[i] @ z[p] / temperature) / denominator) for p in positives) / len(positives)
        anchors += 1
    return total, anchors


@pytest.mark.parametrize("loss", ["supcon", "cosine"])
def test_the_losses_match_a_hand_computation(tokenizer, loss):
    rows = labelled_rows(n_per_class=3)
    share = {"supcon": 1.0, "cosine": 0.5}[loss]
    batch = PartnerCollator(ClassificationCollator(tokenizer), LabelPartners(rows, seed=2, positive_share=share))(rows[::2])
    model = tiny_classifier("bert").eval()
    task = ContrastiveClassificationTask(model, loss=loss, weight=0.7, temperature=0.2)
    with torch.no_grad():
        out = task(**batch)
        features = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    f, groups, b = features.double().numpy(), batch["groups"].tolist(), len(rows[::2])
    if loss == "supcon":
        expected, items = _by_hand_supcon(f, groups, 0.2)
    else:
        cos = [f[i] @ f[b + i] / np.linalg.norm(f[i]) / np.linalg.norm(f[b + i]) for i in range(b)]
        expected, items = sum((c - (groups[i] == groups[b + i])) ** 2 for i, c in enumerate(cos)), b
        assert 0 < sum(groups[i] == groups[b + i] for i in range(b)) < b  # both kinds of pair are there
    got, count = out["losses"]["contrastive"]
    assert float(got) == pytest.approx(expected, rel=1e-4) and int(count) == items
    assert int(task.count_items(batch)["contrastive"]) == items
    # The cross-entropy is plain fine-tuning's, over the examples alone (not their partners).
    ce = torch.nn.functional.cross_entropy(logits[:b], batch["labels"][:b], reduction="sum")
    assert float(out["losses"]["cls"][0]) == pytest.approx(float(ce), rel=1e-5) and int(out["losses"]["cls"][1]) == b
    assert task.loss_weights == {"cls": 1.0, "contrastive": 0.7}


def test_cosine_pairs_of_orthogonal_and_equal_vectors():
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    partner = torch.tensor([False, False, True, True])
    loss, pairs = cosine_pair_sums(features, torch.tensor([0, 1, 0, 1]), partner)
    assert int(pairs) == 2 and float(loss) == pytest.approx((0 - 1) ** 2 + (1 - 1) ** 2)  # same class, orthogonal; equal
    loss, _ = cosine_pair_sums(features, torch.tensor([0, 1, 1, 0]), partner)
    assert float(loss) == pytest.approx(0 + 1)  # different classes: orthogonal costs 0, equal costs 1


def test_bad_settings_are_one_line():
    with pytest.raises(ConfigError, match="weight"):
        ContrastiveFinetuneConfig(weight=0)
    with pytest.raises(ConfigError, match="contrastive loss 'triplet'"):
        ContrastiveClassificationTask(tiny_classifier("bert"), loss="triplet")


# ------------------------------------------------------------------------------- the CLI, end to end


#: Three topics in words of the test tokenizer's vocabulary (tests.helpers.WORDS).
WORDS = {"animals": "cat dogs bird", "places": "fields walls rivers mountains", "verbs": "sat ran sang flowing"}


def topic_rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    filler = "the a and of to".split()
    rows = []
    for i in range(n):
        label = list(WORDS)[i % 3]
        words = WORDS[label].split() + filler
        rows.append({"text": " ".join(rng.choice(words, size=int(rng.integers(4, 10)))), "label": label})
    return rows


@pytest.mark.slow
def test_contrastive_finetuning_with_the_aux_loss_resumes_exactly_and_pipeline_predicts_what_it_scored(tmp_path, tokenizer):
    from transformers import pipeline

    from nlp_ssl.metrics import compute_scores

    checkpoint = tmp_path / "encoder"
    torch.manual_seed(3)
    BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64, initializer_range=0.2)).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    pool = write_jsonl(tmp_path / "pool.jsonl", topic_rows(150, seed=1))
    test = write_jsonl(tmp_path / "test.jsonl", topic_rows(60, seed=2))
    args = [f"model.name_or_path={checkpoint}", f"data.train_file={pool}", f"data.test_file={test}", "data.k_per_class=8",
            "data.validation_per_class=6", "train.max_steps=40", "eval.every=8", "save.every=8", "train.global_batch_size=8",
            "optim.learning_rate=3e-3", "log.progress_bar=false", "finetune.mode=contrastive", "finetune.aux_lm=mlm",
            "finetune.aux_weight=0.5"]

    straight = start_cli(tmp_path, "finetune_text", *args, "output_dir=straight")
    log = straight.communicate(timeout=600)[0]
    assert straight.returncode == 0, log[-3000:]
    run_killed_and_resumed(tmp_path, "finetune_text", [*args, "output_dir=stopped"], r"step 16: eval_loss")
    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(tmp_path / "stopped" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    results = json.loads((tmp_path / "straight" / "all_results.json").read_text())
    assert {"eval_contrastive_loss", "eval_lm_loss", "eval_cls_loss"} <= set(results)
    assert results["test_accuracy"] > 0.5 and results["test_macro_f1"] > 0.5  # three easy topics: chance is 1/3
    assert "contrastive loss (supervised contrastive" in (tmp_path / "straight" / "README.md").read_text()
    classify = pipeline("text-classification", model=str(tmp_path / "straight"))
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    names = list(WORDS)
    predicted = [names.index(p["label"]) for p in classify([r["text"] for r in rows], batch_size=16)]
    scores = compute_scores(["accuracy", "macro_f1"], predicted, [names.index(r["label"]) for r in rows])
    assert scores["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-12)
    assert scores["macro_f1"] == pytest.approx(results["test_macro_f1"], abs=1e-12)
