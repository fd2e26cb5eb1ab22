"""Streamed training data resumes from its saved state: exactly, and without re-reading the stream.

A streamed run keeps the stream's position (``datasets``' ``state_dict`` through torchdata's
StatefulDataLoader) in each checkpoint. These tests check that a resumed run ends with the same
weights as an uninterrupted one (mid-epoch, at the very end of an epoch, and across epochs), and
that the documents a resume reads do not grow with the step it resumes at, while an old checkpoint
without that state still resumes by re-reading.
"""

import shutil
import time

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from transformers import BertConfig, BertForMaskedLM

from nlp_ssl.config import build_config
from nlp_ssl.data import text as text_data
from nlp_ssl.data.text import TextDataConfig, load_text_splits, tokenize_and_pack
from nlp_ssl.objectives import MLMCollator
from nlp_ssl.tasks.masked_lm import MaskedLMTask
from nlp_ssl.trainer import STREAM_STATE_FILE, TrainConfig, Trainer
from nlp_ssl.training import checkpointing as ckpt
from tests.helpers import toy_texts, write_jsonl

#: Documents per shuffled window and per tokenizer call: small, so that resuming at step 15 reads far
#: more of the stream than either (the recipe's defaults are 10,000 and 1,000).
WINDOW, MAP_BATCH, BLOCK, MICRO = 8, 4, 32, 8


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


class Crash(Exception):
    pass


class Reads:
    """Counts the documents that enter a shuffle window (read from the file) and the tokenizer."""

    def __init__(self, monkeypatch):
        self.windowed = self.tokenized = 0
        shuffle, pack = text_data.WindowShuffle.__call__, text_data.BlockPacker.__call__

        def counted_shuffle(fn, batch, indices):
            self.windowed += len(indices)
            return shuffle(fn, batch, indices)

        def counted_pack(fn, batch):
            self.tokenized += len(batch[fn.text_column])
            return pack(fn, batch)

        monkeypatch.setattr(text_data.WindowShuffle, "__call__", counted_shuffle)
        monkeypatch.setattr(text_data.BlockPacker, "__call__", counted_pack)

    def reset(self):
        self.windowed = self.tokenized = 0


def stream(corpus, tok):
    cfg = TextDataConfig(train_file=str(corpus), streaming=True, streaming_validation_documents=5, shuffle_buffer=WINDOW)
    return tokenize_and_pack(load_text_splits(cfg, seed=5)["train"], tok, "text", BLOCK, map_batch_size=MAP_BATCH)


def run(out, corpus, tok, max_steps, resume=None, crash_at=None, monkeypatch=None, save_every=3, accumulation=2):
    """Train a tiny BERT (with dropout) on the stream; with ``crash_at``, die right after that checkpoint."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    cfg = build_config(TrainConfig, {
        "output_dir": str(out), "train.max_steps": max_steps, "train.global_batch_size": accumulation * MICRO,
        "impl.micro_batch_size": MICRO, "optim.learning_rate": 3e-3, "eval.every": 1000, "save.every": save_every,
        "save.total_limit": 10, "log.every": 1, "log.report_to": [], "log.progress_bar": False, "seed": 3, "resume": resume,
    })
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.3)
    trainer = Trainer(cfg, MaskedLMTask(BertForMaskedLM(config)), stream(corpus, tok), MLMCollator(tok, seed=1))
    if crash_at is not None:
        save = Trainer.save_checkpoint

        def save_then_crash(self):
            path = save(self)
            if self.state.step == crash_at:
                raise Crash
            return path

        monkeypatch.setattr(Trainer, "save_checkpoint", save_then_crash)
        try:
            with pytest.raises(Crash):
                trainer.fit()
        finally:
            monkeypatch.setattr(Trainer, "save_checkpoint", save)
        return trainer
    trainer.fit()
    return trainer


def weights(trainer):
    return {k: v.clone() for k, v in trainer.unwrapped_task.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def blocks_per_epoch(corpus, tok) -> int:
    return sum(1 for _ in stream(corpus, tok))


@pytest.fixture(scope="module")
def short_corpus(tmp_path_factory):
    """Four micro-batches an epoch: runs cross several epoch boundaries."""
    return write_jsonl(tmp_path_factory.mktemp("short") / "c.jsonl", [{"text": t} for t in toy_texts(28, seed=8)])


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
    """Over 20 optimizer steps in one epoch."""
    return write_jsonl(tmp_path_factory.mktemp("long") / "c.jsonl", [{"text": t} for t in toy_texts(500, seed=9)])


def test_the_window_shuffle_permutes_each_window_from_the_seed_and_its_position():
    shuffle = text_data.WindowShuffle(seed=1)
    docs = {"text": [f"d{i}" for i in range(8)], "n": list(range(8))}
    first = shuffle(docs, list(range(16, 24)))
    assert sorted(first["n"]) == list(range(8)) and first["n"] != list(range(8))
    assert [f"d{n}" for n in first["n"]] == first["text"]  # columns stay aligned
    assert shuffle(docs, list(range(16, 24))) == first  # a re-read window comes back in the same order
    assert shuffle(docs, list(range(24, 32))) != first  # another position, another order
    assert text_data.WindowShuffle(seed=2)(docs, list(range(16, 24))) != first


def test_streamed_resume_gives_identical_weights(tmp_path, wordpiece_tokenizer, short_corpus, monkeypatch):
    per_epoch = blocks_per_epoch(short_corpus, wordpiece_tokenizer) // MICRO  # micro-batches an epoch
    assert per_epoch % 2 == 0, "two micro-batches a step: an epoch must end on a step"
    end_of_epoch, mid_epoch = per_epoch // 2, per_epoch // 2 + 1  # after the first epoch's last batch; inside the second
    max_steps = mid_epoch + per_epoch // 2 + 1  # both resumes cross another epoch boundary
    straight = weights(run(tmp_path / "a", short_corpus, wordpiece_tokenizer, max_steps, save_every=100))
    run(tmp_path / "b", short_corpus, wordpiece_tokenizer, max_steps, crash_at=mid_epoch, monkeypatch=monkeypatch,
        save_every=1)
    checkpoints = tmp_path / "b" / "checkpoints"
    for step in (end_of_epoch, mid_epoch):
        saved = torch.load(ckpt.checkpoint_dir(checkpoints, step) / STREAM_STATE_FILE, weights_only=False)
        assert saved["loader"]["_iterator_finished"] is (step == end_of_epoch)
    # Resume from the end-of-epoch checkpoint alone (a copy), then from the mid-epoch one (the latest).
    (tmp_path / "c" / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt.checkpoint_dir(checkpoints, end_of_epoch), ckpt.checkpoint_dir(tmp_path / "c" / "checkpoints",
                                                                                         end_of_epoch))
    for out, step in ((tmp_path / "c", end_of_epoch), (tmp_path / "b", mid_epoch)):
        resumed = run(out, short_corpus, wordpiece_tokenizer, max_steps, resume="auto", save_every=100)
        assert resumed.resume_from == ckpt.checkpoint_dir(out / "checkpoints", step)
        assert resumed.state.epoch >= 2
        assert_same(straight, weights(resumed))


def test_resume_reads_the_same_few_documents_at_a_late_step_as_at_an_early_one(
    tmp_path, wordpiece_tokenizer, long_corpus, monkeypatch
):
    reads = Reads(monkeypatch)
    early, late, end = 3, 15, 16
    out = tmp_path / "run"
    run(out, long_corpus, wordpiece_tokenizer, end, crash_at=late, monkeypatch=monkeypatch)
    docs_per_step = reads.tokenized / late
    results = {}
    for step in (early, late):
        resumed = tmp_path / f"from_{step}"
        (resumed / "checkpoints").mkdir(parents=True)
        shutil.copytree(ckpt.checkpoint_dir(out / "checkpoints", step), ckpt.checkpoint_dir(resumed / "checkpoints", step))
        reads.reset()
        start = time.perf_counter()
        trainer = run(resumed, long_corpus, wordpiece_tokenizer, step + 1, resume="auto")
        seconds = time.perf_counter() - start
        assert trainer.state.step == step + 1
        results[step] = (reads.windowed, reads.tokenized)
        print(f"resume at step {step}: {reads.windowed} documents read into windows, {reads.tokenized} tokenized, "
              f"{seconds:.2f} s for the resume and one step")
    # Reads are bounded by one window, one tokenizer batch and the step itself, whatever the step.
    bound = WINDOW + MAP_BATCH + 2 * docs_per_step + 2
    for step, (windowed, tokenized) in results.items():
        assert windowed <= WINDOW + bound and tokenized <= bound, (step, results[step], bound)
    assert late * docs_per_step > 4 * bound  # re-reading up to step 15 would be far above the bound

    # An old checkpoint (no stream state) still resumes, by re-reading the stream up to its step; the
    # checkpoints after it carry no stream state until the next epoch, since the loader's own was not used.
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt.checkpoint_dir(out / "checkpoints", late), ckpt.checkpoint_dir(old / "checkpoints", late))
    target = ckpt.checkpoint_dir(old / "checkpoints", late)
    (target / STREAM_STATE_FILE).unlink()
    ckpt.write_manifest(target)
    reads.reset()
    run(old, long_corpus, wordpiece_tokenizer, late + 4, resume="auto")
    assert reads.tokenized > late * docs_per_step * 0.8
    assert not (ckpt.checkpoint_dir(old / "checkpoints", late + 3) / STREAM_STATE_FILE).exists()
    assert (ckpt.checkpoint_dir(old / "checkpoints", late + 3) / ckpt.STATE_FILE).is_file()
