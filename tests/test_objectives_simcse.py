"""Unsupervised SimCSE (nlp_ssl/objectives/simcse.py, tasks/sentence_embedding.py, the registry's ``simcse``):
each text twice in a batch, the two views differ only by dropout, the loss is InfoNCE by hand, and
continued pretraining of a bare encoder runs from the CLI, resumes exactly and fine-tunes afterwards."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertModel

from nlp_ssl.data.whole_texts import TruncatedTexts
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import ModelConfig
from nlp_ssl.objectives import registry
from nlp_ssl.objectives.simcse import SimCSECollator, SimCSEConfig
from nlp_ssl.tasks.sentence_embedding import SentenceEmbeddingTask, pool
from tests.helpers import ROOT, run_killed_and_resumed, start_cli, toy_texts, write_jsonl

TOKENIZER = ROOT / "tests" / "data" / "tokenizers" / "wordpiece"


def tiny_bert(dropout: float = 0.1, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                                attention_probs_dropout_prob=dropout), add_pooling_layer=False)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


@pytest.fixture(scope="module")
def examples(tokenizer):
    ds = Dataset.from_dict({"text": toy_texts(6, seed=3)})
    return list(ds.map(TruncatedTexts(tokenizer, "text", 16), batched=True, remove_columns=["text"]))


# ------------------------------------------------------------------------------------ the collator


def test_every_text_comes_twice_side_by_side_and_nothing_depends_on_the_batch(tokenizer, examples):
    collator = SimCSECollator(tokenizer)
    batch = collator(examples)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[0] == 2 * len(examples)
    assert torch.equal(ids[0::2], ids[1::2]) and torch.equal(mask[0::2], mask[1::2])
    for i, example in enumerate(examples):
        n = len(example["input_ids"])
        assert ids[2 * i, :n].tolist() == example["input_ids"] and mask[2 * i].sum() == n
        assert (ids[2 * i, n:] == tokenizer.pad_token_id).all()
    # Batched differently (and in another epoch), each example's rows are the same tokens.
    collator.set_epoch(3)
    alone = collator(examples[2:3])
    n = len(examples[2]["input_ids"])
    assert torch.equal(alone["input_ids"][:, :n], ids[4:6, :n])


def test_texts_are_truncated_whole_and_empty_ones_dropped(tokenizer):
    long = " ".join(["cat"] * 50)
    out = TruncatedTexts(tokenizer, "text", 8)({"text": [long, "", "the dog"]})
    assert len(out["input_ids"]) == 2  # the empty text has only [CLS] [SEP]: dropped
    first, second = out["input_ids"]
    assert len(first) == 8 and first[0] == tokenizer.cls_token_id and first[-1] == tokenizer.sep_token_id
    assert second == tokenizer("the dog")["input_ids"]


def test_a_bad_setting_is_one_line():
    with pytest.raises(ConfigError, match="temperature"):
        SimCSEConfig(temperature=0)
    with pytest.raises(ConfigError, match="pooling 'max'"):
        SentenceEmbeddingTask(tiny_bert(), pooling="max")


# ------------------------------------------------------------------------------- views and the loss


def test_the_two_views_differ_only_by_dropout(tokenizer, examples):
    batch = SimCSECollator(tokenizer)(examples)
    task = SentenceEmbeddingTask(tiny_bert(dropout=0.1))
    task.eval()
    with torch.no_grad():
        still = task.embed(**batch)
    assert torch.equal(still[0::2], still[1::2])  # no dropout: the two rows are one embedding
    task.train()
    with torch.no_grad():
        noisy = task.embed(**batch)
    gap = (noisy[0::2] - noisy[1::2]).norm(dim=-1)
    assert (gap > 1e-4).all()  # dropout on: every pair differs ...
    other = (noisy[0::2] - noisy[1::2].roll(1, 0)).norm(dim=-1)
    assert gap.mean() < other.mean()  # ... but less than two different texts do
    plain = SentenceEmbeddingTask(tiny_bert(dropout=0.0))
    plain.train()
    with torch.no_grad():
        same = plain.embed(**batch)
    assert torch.equal(same[0::2], same[1::2])  # training mode without dropout: identical views again


def test_pooling_is_the_masked_mean_or_the_first_token():
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.allclose(pool(hidden, mask, "mean"), torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)]))
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_the_loss_is_infonce_over_the_other_rows_by_hand(tokenizer, examples, pooling):
    temperature = 0.05
    batch = SimCSECollator(tokenizer)(examples[:3])
    task = SentenceEmbeddingTask(tiny_bert(), temperature=temperature, pooling=pooling)
    task.eval()
    with torch.no_grad():
        out = task(**batch)
        hidden = task.model(**batch).last_hidden_state
    mask = batch["attention_mask"].numpy()
    h = hidden.double().numpy()
    e = np.stack([h[i, 0] if pooling == "cls" else h[i, mask[i] == 1].mean(0) for i in range(len(h))])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(e)):
        positive = i + 1 if i % 2 == 0 else i - 1
        others = [a for a in range(len(e)) if a != i]
        denominator = sum(math.exp(e[i] @ e[a] / temperature) for a in others)
        total += -math.log(math.exp(e[i] @ e[positive] / temperature) / denominator)
    loss, anchors = out["losses"]["loss"]
    assert int(anchors) == 6 and int(task.count_items(batch)["loss"]) == 6
    assert float(loss) == pytest.approx(total, rel=1e-4)


def test_the_registry_builds_a_bare_encoder_whose_every_weight_learns(tmp_path, tokenizer, examples):
    """DDP needs every parameter in the loss: the saved model is the bare encoder, no unused head."""
    checkpoint = tmp_path / "encoder"
    tiny_bert().save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    objective = registry.find_objective("simcse", "text")
    parts = objective.parts(SimCSEConfig(), registry.TextSetup(tokenizer, ModelConfig(name_or_path=str(checkpoint)), 0, 3e-5))
    assert type(parts.model).__name__ == "BertModel" and parts.task.model is parts.model
    assert parts.pipeline_tag == "feature-extraction" and "SimCSE" in parts.summary
    loaded = BertModel.from_pretrained(checkpoint, add_pooling_layer=False).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in parts.model.state_dict().items())  # the checkpoint's weights
    out = parts.task(**parts.collator(examples))
    out["losses"]["loss"][0].backward()
    missing = [n for n, p in parts.task.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


# ------------------------------------------------------------------------------- the CLI, end to end


SMALL = ["data.block_size=24", "train.global_batch_size=8", "eval.batch_size=8", "log.every=1", "eval.every=3",
         "save.every=3", "train.max_steps=8", "log.progress_bar=false", "log.report_to=[]", "data.validation_split=0.1"]


@pytest.mark.slow
def test_simcse_continues_a_bare_encoder_from_the_cli_resumes_exactly_and_fine_tunes(tmp_path, tokenizer):
    from transformers import AutoModel, AutoModelForSequenceClassification

    checkpoint = tmp_path / "encoder"  # saved as sentence encoders (all-MiniLM-L6-v2) are: a bare BertModel
    tiny_bert(seed=1).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    corpus = write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in toy_texts(120, seed=5)])
    args = ["--config", "pretrain_mlm_simcse.yaml", f"model.name_or_path={checkpoint}", f"data.train_file={corpus}", *SMALL,
            "optim.learning_rate=5e-4"]

    straight = start_cli(tmp_path, "pretrain_mlm", *args, "output_dir=straight")
    log = straight.communicate(timeout=600)[0]
    assert straight.returncode == 0, log[-3000:]
    run_killed_and_resumed(tmp_path, "pretrain_mlm", [*args, "output_dir=stopped"], r"step 3: eval_loss")
    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(tmp_path / "stopped" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    results = json.loads((tmp_path / "straight" / "all_results.json").read_text())
    assert results["steps"] == 8 and "eval_retrieval_accuracy" not in results  # identical views without dropout
    history = json.loads((tmp_path / "straight" / "trainer_history.json").read_text())
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert len(evals) == 3 and evals[-1] < evals[0]  # the views of a text are pulled together
    model = AutoModel.from_pretrained(tmp_path / "straight")  # plain transformers: the bare encoder
    assert type(model).__name__ == "BertModel"
    start = BertModel.from_pretrained(checkpoint, add_pooling_layer=False).state_dict()
    assert any(not torch.equal(start[k], model.state_dict()[k]) for k in start)  # it trained
    assert "unsupervised SimCSE" in (tmp_path / "straight" / "README.md").read_text()

    # The continued encoder fine-tunes like any checkpoint.
    rows = [{"text": t, "label": ["short", "long"][len(t.split()) > 20]} for t in toy_texts(80, seed=6)]
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    finetune = start_cli(tmp_path, "finetune_text", f"model.name_or_path={tmp_path / 'straight'}", f"data.train_file={pool}",
                    "data.k_per_class=8", "data.validation_per_class=4", "train.max_steps=3", "eval.every=3",
                    "train.global_batch_size=8",
                    "log.progress_bar=false", "output_dir=classifier")
    log = finetune.communicate(timeout=600)[0]
    assert finetune.returncode == 0, log[-3000:]
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "classifier").config.num_labels == 2
