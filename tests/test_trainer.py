"""The trainer in-process on a tiny BERT: accumulation, schedule, evaluation, checkpoints."""

import json

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from datasets import Dataset
from transformers import BertConfig, BertForMaskedLM

from nlp_ssl import checkpointing as ckpt
from nlp_ssl.data.text import tokenize_and_pack
from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives import MLMCollator
from nlp_ssl.tasks.masked_lm import MaskedLMTask
from nlp_ssl.trainer import TrainConfig, Trainer
from tests.helpers import toy_texts


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def data(wordpiece_tokenizer):
    ds = Dataset.from_dict({"text": toy_texts(300, seed=4)})
    blocks = tokenize_and_pack(ds, wordpiece_tokenizer, "text", 32)
    return blocks.select(range(128)), blocks.select(range(128, 160))


def tiny_task(tok, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return MaskedLMTask(BertForMaskedLM(config))


def train(tmp_path, tok, data, **overrides):
    cfg = TrainConfig(
        output_dir=str(tmp_path), max_steps=6, global_batch_size=16, micro_batch_size=16, learning_rate=3e-3,
        eval_every=3, save_every=100, log_every=1, report_to=[], progress_bar=False, warmup_steps=2, seed=7,
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
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
    trainer, results = train(tmp_path, wordpiece_tokenizer, data, max_steps=1, eval_every=1, eval_batch_size=5)
    collator = MLMCollator(wordpiece_tokenizer, seed=1)
    model = trainer.unwrapped_task.model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data[1]), 5):  # the same batches the trainer saw, last one short
        batch = collator([data[1][i] for i in range(start, min(start + 5, len(data[1])))])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total += torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), batch["labels"].view(-1), reduction="sum").item()
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
        train(tmp_path, wordpiece_tokenizer, data, max_steps=2, save_every=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    _, results = train(tmp_path, wordpiece_tokenizer, data, max_steps=6, save_every=2, resume="auto")
    assert results["steps"] == 6


def test_early_stopping(tmp_path, wordpiece_tokenizer, data):
    # A learning rate of zero never improves the validation loss after the first evaluation.
    trainer, results = train(tmp_path, wordpiece_tokenizer, data, learning_rate=0.0, max_steps=50, eval_every=1, early_stopping_patience=2)
    assert results["steps"] == 3 and results["best_step"] == 1


def test_resume_mid_epoch_with_dropout_gives_identical_weights(tmp_path, wordpiece_tokenizer, data, monkeypatch):
    """Dropout randomness, data order and masks all continue exactly after a resume."""

    def run(out, max_steps, resume=None):
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        cfg = TrainConfig(
            output_dir=str(out), max_steps=max_steps, global_batch_size=8, micro_batch_size=4, learning_rate=3e-3,
            eval_every=100, save_every=3, log_every=1, report_to=[], progress_bar=False, seed=3, resume=resume,
        )
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
    cfg = TrainConfig(
        output_dir=str(tmp_path), max_steps=4, global_batch_size=16, micro_batch_size=16, eval_every=2,
        save_every=100, report_to=[], progress_bar=False, load_best_at_end=True,
    )
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
