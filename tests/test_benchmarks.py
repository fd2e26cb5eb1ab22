"""The pieces the benchmarks measure with (benchmarks/ is scripts, not a package: put it on the path)."""

import sys

import pytest
import torch

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_data  # noqa: E402
import bench_trainer  # noqa: E402
import gpu_check  # noqa: E402


def test_step_clock_stamps_every_optimizer_step_and_measures_after_the_warmup():
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=0.1, betas=(0.9, 0.98))
    with bench_trainer.StepClock() as clock:
        for _ in range(6):
            param.grad = torch.ones(3)
            optimizer.step()
    param.grad = torch.ones(3)
    optimizer.step()  # after the clock: not seen
    summary = clock.summary(warmup=2, tokens_per_step=100)
    assert summary["steps_seen"] == 6 and summary["steps_measured"] == 3
    assert summary["tokens_per_s"] == pytest.approx(300 / (clock.wall[5] - clock.wall[2]))
    assert summary["threads"] == torch.get_num_threads()
    assert summary["optimizer"]["class"] == "AdamW" and summary["optimizer"]["settings"]["betas"] == [0.9, 0.98]
    rebuilt = getattr(torch.optim, summary["optimizer"]["class"])([param], **{
        k: tuple(v) if isinstance(v, list) else v for k, v in summary["optimizer"]["settings"].items()})
    assert rebuilt.defaults == optimizer.defaults


def test_gpu_check_tokenizer_feeds_both_trainers_collators():
    from transformers import DataCollatorForLanguageModeling

    from nlp_ssl.objectives import CLMCollator, MLMCollator

    tokenizer = gpu_check.numbered_tokenizer(60)
    assert len(tokenizer) == 60 and tokenizer.mask_token_id == 4 and tokenizer.pad_token_id == 0
    rows = [{"input_ids": list(range(5, 60))}, {"input_ids": list(range(59, 4, -1))}]
    ours = MLMCollator(tokenizer, mlm_probability=0.5, seed=0)(rows)
    hf = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, seed=0)(rows)
    for batch in (ours, hf):
        predicted = batch["labels"] != -100
        assert predicted.any() and (batch["input_ids"][predicted] == 4).any()
    clm = CLMCollator(tokenizer)(rows)
    assert torch.equal(clm["labels"], clm["input_ids"])


def test_bench_data_measures_each_way_of_preparing_the_same_text(tmp_path, capsys):
    import json
    import re

    corpus = bench_data.write_corpus(tmp_path / "corpus.jsonl", 0.3)
    texts = [json.loads(line)["text"] for line in corpus.open()]
    assert 0.3e6 <= sum(len(t.encode()) for t in texts) < 0.3e6 + max(len(t.encode()) for t in texts)
    tokenizer = ROOT / "tests" / "data" / "tokenizers" / "wordpiece"
    runs = [("bare", 1), ("prepare", 1), ("run_mlm", 1)]
    results = {(0.3, name, procs): bench_data.measure(name, corpus, tokenizer, tmp_path / name, procs) for name, procs in runs}
    bare, prepared, run_mlm = (results[0.3, name, 1] for name, _ in runs)
    assert prepared["bytes"] == 2 * prepared["tokens"]  # uint16 ids and nothing else
    assert run_mlm["tokens"] % bench_data.BLOCK == 0 and run_mlm["bytes"] >= 7 * run_mlm["tokens"]  # int32 ids + 3 byte masks
    # The same text: each packs the tokenizer's tokens, plus its specials, less a partial block per batch.
    batches = -(-len(texts) // bench_data.BATCH)
    for packed in (prepared, run_mlm):
        specials = 2 * len(texts) + packed["tokens"] // 64
        assert bare["tokens"] - batches * bench_data.BLOCK < packed["tokens"] <= bare["tokens"] + specials
    results.update({(1.2, name, procs): results[0.3, name, procs] for name, procs in runs})
    bench_data.report(results, [0.3, 1.2], runs)
    table = capsys.readouterr().out
    assert "run_mlm tokenize + group_texts" in table and "main 1.00x" in table
    assert re.search(r"nlp-ssl prepare \(uint16 memmap\) +1 +[\d,]+ +[\d,]+ +\d+% +[\d,]+ +2\.00 ", table), table
    (skip_early, early), (skip_late, late) = bench_data.resume_timing(tmp_path / "prepare" / "store", tokenizer, batch_size=4)
    assert skip_early == 10 and skip_late > skip_early and early > 0 and late > 0
