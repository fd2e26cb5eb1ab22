"""The trainer in-process on a tiny BERT: accumulation, schedule, evaluation, checkpoints."""

import json

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from transformers import BertConfig, BertForMaskedLM

from nlp_ssl.config import build_config
from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives import MLMCollator
from nlp_ssl.tasks.masked_lm import MaskedLMTask
from nlp_ssl.trainer import TrainConfig, Trainer
from nlp_ssl.training import checkpointing as ckpt
from nlp_ssl.training.run_config import MOVED_TRAIN_KEYS

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture
def data(toy_mlm_blocks):
    return toy_mlm_blocks


def tiny_task(tok, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return MaskedLMTask(BertForMaskedLM(config))


def train(tmp_path, tok, data, **overrides):
    cfg = build_config(TrainConfig, {
        "output_dir": str(tmp_path), "train.max_steps": 6, "train.global_batch_size": 16, "impl.micro_batch_size": 16,
        "optim.learning_rate": 3e-3, "eval.every": 3, "save.every": 100, "log.every": 1, "log.report_to": [],
        "log.progress_bar": False, "optim.warmup_steps": 2, "seed": 7,
        **{MOVED_TRAIN_KEYS.get(k, k): v for k, v in overrides.items()},
    })
    task = tiny_task(tok)
    trainer = Trainer(cfg, task, data[0], MLMCollator(tok, seed=1), eval_dataset=data[1], processor=tok)
    results = trainer.fit()
    return trainer, results


def test_accumulation_gives_the_same_training(tmp_path, wordpiece_tokenizer, data):
    t1, r1 = train(tmp_path / "a", wordpiece_tokenizer, data)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    t4, r4 = train(tmp_path / "b", wordpiece_tokenizer, data, micro_batch_size=4)
    assert t4.accumulation == 4 and t1.accumulation == 1
    for (name, p1), (_, p4) in zip(t1.unwrapped_task.named_parameters(), t4.unwrapped_task.named_parameters()):
        torch.testing.assert_close(p1, p4, atol=2e-5, rtol=1e-4, msg=name)
    assert abs(r1["eval_loss"] - r4["eval_loss"]) < 1e-4


def test_schedule_is_counted_in_optimizer_steps(tmp_path, wordpiece_tokenizer, data):
    trainer, results = train(tmp_path, wordpiece_tokenizer, data, micro_batch_size=4, max_steps=5)
    assert results["steps"] == 5
    assert trainer.scheduler.last_epoch == 5
    lrs = [h["lr"] for h in trainer.state.history if "lr" in h]
    assert lrs[0] == pytest.approx(3e-3 / 2)  # after one step of a 2-step warmup
    assert lrs[-1] == pytest.approx(0.0)  # linear decay reaches zero exactly at max_steps


def test_eval_loss_is_the_token_mean_over_the_whole_set(tmp_path, wordpiece_tokenizer, data):
    trainer, results = train(tmp_path, wordpiece_tokenizer, data, max_steps=1, warmup_steps=0, eval_every=1,
                             eval_batch_size=5)
    collator = MLMCollator(wordpiece_tokenizer, seed=1)
    model = trainer.unwrapped_task.model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data[1]), 5):  # the same batches the trainer saw, last one short
        batch = collator([data[1][i] for i in range(start, min(start + 5, len(data[1])))])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total += torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), batch["labels"].view(-1),
                                                   reduction="sum").item()
        count += (batch["labels"] != -100).sum().item()
    assert results["eval_loss"] == pytest.approx(total / count, rel=1e-4)
    assert results["eval_perplexity"] == pytest.approx(torch.tensor(total / count).exp().item(), rel=1e-4)


def test_checkpoints_rotate_and_best_model_is_kept(tmp_path, wordpiece_tokenizer, data):
    (tmp_path / "checkpoints").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".tmp-step_00000099").mkdir()  # debris of a crashed save
    trainer, results = train(tmp_path, wordpiece_tokenizer, data, max_steps=8, save_every=2, save_total_limit=2, eval_every=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_00000004", "step_00000006"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    state = json.loads((tmp_path / "checkpoints" / "step_00000006" / ckpt.STATE_FILE).read_text())
    assert state["step"] == 6
    assert (tmp_path / "best_model" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "all_results.json").read_text())
    assert saved["steps"] == 8 and saved["best_step"] == results["best_step"]
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
    card = (tmp_path / "README.md").read_text()
    assert "eval_loss" in card and "max_steps: 8" in card


def test_fresh_start_over_an_earlier_runs_checkpoints_is_refused(tmp_path, wordpiece_tokenizer, data):
    from nlp_ssl.errors import ConfigError

    train(tmp_path, wordpiece_tokenizer, data, max_steps=4, save_every=2)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    latest = ckpt.latest_checkpoint(tmp_path / "checkpoints").name
    with pytest.raises(ConfigError, match=rf"already holds checkpoints of an earlier run \(latest: {latest}\); pass resume=auto"):
        train(tmp_path, wordpiece_tokenizer, data, max_steps=2, warmup_steps=0, save_every=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    _, results = train(tmp_path, wordpiece_tokenizer, data, max_steps=6, save_every=2, resume="auto")
    assert results["steps"] == 6


def test_early_stopping(tmp_path, wordpiece_tokenizer, data):
    # A learning rate too small to move a float32 weight never improves the validation loss after the first evaluation.
    trainer, results = train(tmp_path, wordpiece_tokenizer, data, learning_rate=1e-30, max_steps=50, eval_every=1,
                             early_stopping_patience=2)
    assert results["steps"] == 3 and results["best_step"] == 1


def test_resume_mid_epoch_with_dropout_gives_identical_weights(tmp_path, wordpiece_tokenizer, data, monkeypatch):
    """Dropout randomness, data order and masks all continue exactly after a resume."""

    def run(out, max_steps, resume=None):
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        cfg = build_config(TrainConfig, {
            "output_dir": str(out), "train.max_steps": max_steps, "train.global_batch_size": 8, "impl.micro_batch_size": 4,
            "optim.learning_rate": 3e-3, "eval.every": 100, "save.every": 3, "log.every": 1, "log.report_to": [],
            "log.progress_bar": False, "seed": 3, "resume": resume,
        })
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(wordpiece_tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.3)
        trainer = Trainer(cfg, MaskedLMTask(BertForMaskedLM(config)), data[0], MLMCollator(wordpiece_tokenizer, seed=1))
        trainer.fit()
        return {k: v.clone() for k, v in trainer.unwrapped_task.state_dict().items()}

    straight = run(tmp_path / "a", 20)

    class Crash(Exception):
        pass

    save = Trainer.save_checkpoint

    def save_then_crash(self):
        path = save(self)
        if self.state.step == 9:  # 128 examples / 8 = 16 steps an epoch: mid-epoch
            raise Crash
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        run(tmp_path / "b", 20)
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    resumed = run(tmp_path / "b", 20, resume="auto")
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_score_model_results_are_saved_before_the_end(tmp_path, wordpiece_tokenizer, data):
    cfg = build_config(TrainConfig, {
        "output_dir": str(tmp_path), "train.max_steps": 4, "train.global_batch_size": 16, "impl.micro_batch_size": 16,
        "eval.every": 2, "save.every": 100, "log.report_to": [], "log.progress_bar": False, "eval.load_best_at_end": True,
    })
    task = tiny_task(wordpiece_tokenizer)
    trainer = Trainer(cfg, task, data[0], MLMCollator(wordpiece_tokenizer, seed=1), eval_dataset=data[1])
    scored = []

    def score(model):
        scored.append(model.bert.embeddings.word_embeddings.weight.sum().item())
        return {"test_score": scored[-1]}

    results = trainer.fit(score_model=score)
    saved = json.loads((tmp_path / "all_results.json").read_text())
    assert len(scored) == 2  # the last model, then the best one
    assert saved["last_test_score"] == scored[0] and saved["test_score"] == scored[1] == results["test_score"]
    assert "test_score" in (tmp_path / "README.md").read_text()


def test_layer_decay_scales_each_blocks_learning_rate(tmp_path, wordpiece_tokenizer, data):
    """Embeddings learn at decay^(n+1), block i at decay^(n-i), the head at the full rate."""
    trainer, results = train(tmp_path, wordpiece_tokenizer, data, layer_decay=0.5, max_steps=4, eval_every=100)
    lr_of = {id(p): g["initial_lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    named = dict(trainer.unwrapped_task.named_parameters())
    base = 3e-3  # one block: embeddings at 0.25×, the block at 0.5×, the MLM head at 1×
    assert lr_of[id(named["model.bert.embeddings.word_embeddings.weight"])] == pytest.approx(base * 0.25)
    assert lr_of[id(named["model.bert.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(base * 0.5)
    assert lr_of[id(named["model.cls.predictions.transform.dense.weight"])] == pytest.approx(base)
    wd_of = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert wd_of[id(named["model.bert.encoder.layer.0.attention.self.query.bias"])] == 0.0
    assert [h["lr"] for h in trainer.state.history if "lr" in h][1] == pytest.approx(base)  # end of warmup, head's rate
    with pytest.raises(ConfigError, match=r"layer_decay must be in \(0, 1\].*got 1.5"):
        train(tmp_path / "bad", wordpiece_tokenizer, data, layer_decay=1.5)


class EveryFourthTokenMasked:
    """The packed 32-token blocks as they are, predicted at every 4th position: 8 of 32 per row."""

    def __call__(self, examples):
        ids = torch.tensor([e["input_ids"] for e in examples])
        labels = torch.full_like(ids, -100)
        labels[:, ::4] = ids[:, ::4]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def mfu_config(tmp_path, **overrides):
    return build_config(TrainConfig, {
        "output_dir": str(tmp_path), "train.max_steps": 3, "train.global_batch_size": 16, "impl.micro_batch_size": 16,
        "log.every": 1, "eval.every": 100, "save.every": 100, "log.report_to": [], "log.progress_bar": False, "seed": 7,
        **{MOVED_TRAIN_KEYS.get(k, k): v for k, v in overrides.items()},
    })


def test_mfu_of_a_sparse_mlm_head_counts_the_head_at_masked_positions_only(tmp_path, wordpiece_tokenizer, data):
    task = tiny_task(wordpiece_tokenizer)  # BERT: hidden 32, 1 layer, 2 heads, feed-forward 64
    assert task.sparse
    peak = 1e12
    trainer = Trainer(mfu_config(tmp_path, peak_flops=peak), task, data[0], EveryFourthTokenMasked())
    results = trainer.fit()
    # Hand count. Embedding tables are looked up, not multiplied: no FLOPs, except the word embeddings,
    # which are also the MLM decoder's weight (tied) and so count with the head.
    d, f, vocab, layers, seq = 32, 64, len(wordpiece_tokenizer), 1, 32
    body = (2 * d                        # embedding LayerNorm
            + 4 * (d * d + d)            # query, key, value, attention output (weights and biases)
            + 2 * d                      # attention LayerNorm
            + (d * f + f) + (f * d + d)  # feed-forward in and out
            + 2 * d)                     # output LayerNorm
    assert body == 8608
    head = (d * d + d) + 2 * d + vocab * d + vocab  # transform dense, its LayerNorm, decoder weight and bias
    tokens, masked = 16 * 32, 16 * 8  # per step: 16 full rows of 32 tokens, every 4th predicted
    # nanoGPT: 6 FLOPs per multiplied parameter per position (forward 2, backward 4), plus attention's
    # 12·L·d·T per position; the head's 6 per parameter at the masked positions only.
    step_flops = tokens * (6 * body + 12 * layers * d * seq) + 6 * masked * head
    records = [h for h in trainer.state.history if "mfu" in h]
    assert len(records) == 3
    for record in records:  # mfu = FLOPs / elapsed / peak and tokens_per_s = tokens / elapsed
        assert record["mfu"] * peak / record["tokens_per_s"] == pytest.approx(step_flops / tokens, rel=1e-9)
    assert results["train_mfu"] == pytest.approx(sum(r["mfu"] for r in records) / 3)
    assert json.loads((tmp_path / "all_results.json").read_text())["train_mfu"] == pytest.approx(results["train_mfu"])
    # A dense head would cost the head at all 512 positions.
    dense = MaskedLMTask(task.model, sparse=False)
    batch = EveryFourthTokenMasked()([data[0][i] for i in range(16)])
    assert dense.flops(batch) == tokens * (6 * (body + head) + 12 * layers * d * seq)
    assert task.flops(batch) == step_flops


def test_mfu_of_a_vit_counts_patches_and_cls_with_a_measured_cpu_peak(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    from nlp_ssl.tasks.vision import ImageClassificationTask
    from nlp_ssl.trainer import measured_peak_flops

    torch.manual_seed(0)
    d, f, layers, patch, labels = 32, 64, 1, 7, 4
    config = ViTConfig(hidden_size=d, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=f, image_size=28,
                       patch_size=patch, num_channels=1, num_labels=labels)
    task = ImageClassificationTask(ViTForImageClassification(config))
    images = [{"pixel_values": torch.randn(1, 28, 28), "labels": i % labels} for i in range(64)]

    def collate(examples):
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
                "labels": torch.tensor([e["labels"] for e in examples])}

    trainer = Trainer(mfu_config(tmp_path), task, images, collate)  # no peak_flops: measured on this CPU
    results = trainer.fit()
    peak = measured_peak_flops("cpu", torch.float32)
    assert trainer._peak == peak > 1e8
    # Hand count per image: 28×28 in 7×7 patches = 16 patches, + [CLS] = 17 positions, attention over 17.
    # [CLS] and the position embeddings are added, not multiplied: no FLOPs.
    positions = (28 // patch) ** 2 + 1
    body = (patch * patch * 1 * d + d    # patch projection (a 7×7 convolution, 1 channel)
            + 2 * d                      # LayerNorm before attention
            + 4 * (d * d + d)            # query, key, value, output
            + 2 * d                      # LayerNorm after
            + (d * f + f) + (f * d + d)  # MLP
            + 2 * d)                     # final LayerNorm
    assert body == 10208
    classifier = d * labels + labels     # on the [CLS] position only
    image_flops = positions * (6 * body + 12 * layers * d * positions) + 6 * classifier
    records = [h for h in trainer.state.history if "mfu" in h]
    assert len(records) == 3
    for record in records:  # tokens_per_s counts the 16 patches of each image
        assert record["mfu"] * peak / record["tokens_per_s"] == pytest.approx(image_flops / 16, rel=1e-9)
    assert 0 < results["train_mfu"] < 1


def test_the_cpu_peak_probe_is_short_and_leaves_the_rng_alone():
    import time

    from nlp_ssl.trainer import measured_peak_flops

    before = torch.get_rng_state()
    start = time.perf_counter()
    peak = measured_peak_flops("cpu", torch.float32, budget_s=0.05)  # its own cache entry
    assert time.perf_counter() - start < 1.0 and peak > 1e8
    assert torch.equal(torch.get_rng_state(), before)
    assert measured_peak_flops("cpu", torch.float32, budget_s=0.05) == peak  # once per process
