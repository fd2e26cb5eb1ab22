"""The pieces the benchmarks measure with (benchmarks/ is scripts, not a package: put it on the path)."""

import sys

import pytest
import torch

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_data  # noqa: E402
import bench_fewlabel  # noqa: E402
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


@pytest.mark.slow
def test_bench_fewlabel_runs_setfit_and_both_finetunings_on_the_same_rows_and_reuses_finished_cells(tmp_path, capsys):
    """A tiny real run (pair task of 80 training pairs, k=8, 2 steps each): every method trains on the
    rows nlp_ssl's split draws, the scores are those of the predictions, and a rerun reuses the cells."""
    pytest.importorskip("setfit")
    import json

    from nlp_ssl.config import parse_config
    from nlp_ssl.data.wiki import load_wiki_corpus
    from nlp_ssl.data.wiki_pairs import LABELS, topic_pairs
    from nlp_ssl.text.text_finetuning import FinetuneTextConfig, load_splits, split_pool
    from tests.helpers import write_jsonl

    data = tmp_path / "data" / "wikipairs"
    data.mkdir(parents=True)
    corpus = load_wiki_corpus()
    for split, source, n in (("train", "en_train", 80), ("test", "en_test", 24)):
        write_jsonl(data / f"{split}.jsonl", [{"text": r["text"], "text_pair": r["text_pair"], "label": LABELS[r["label"]]}
                                              for r in topic_pairs(corpus[source], n, seed=0)])
    argv = ["--tasks", "wikipairs", "--k", "8", "--seeds", "0", "--methods", "setfit,standard,contrastive", "--max_steps", "2",
            "--setfit_max_steps", "2", "--out", str(tmp_path)]
    bench_fewlabel.main(argv)  # each cell is a subprocess, as in a real run
    assert capsys.readouterr().out.count("(ran)") == 3
    results = json.loads((tmp_path / "results.json").read_text())
    cells = {c["method"]: c for c in results["cells"]}
    assert set(cells) == {"setfit", "standard", "contrastive"}
    assert all(c["train_examples"] == 16 and c["cpu_s"] > 1 and c["settings"]["max_steps"] == 2 for c in cells.values())
    assert "finetune.mode=contrastive" in cells["contrastive"]["command"] and "train.max_steps=2" in cells["standard"]["command"]

    # setfit trained on the very rows the nlp_ssl runs of this k and seed train on, and is scored on its predictions.
    args = [f"data.train_file={data / 'train.jsonl'}", "data.text_pair_column=text_pair", "data.k_per_class=8", "seed=0"]
    cfg = parse_config(FinetuneTextConfig, args, default_yaml=ROOT / "recipes" / "configs" / "finetune_text.yaml")
    splits, names, where = load_splits(cfg.data)
    train, _ = split_pool(splits["pool"], names, cfg.data, cfg.seed, where)
    folder = tmp_path / "runs" / "wikipairs" / "k8_s0" / "setfit"
    written = [json.loads(line) for line in (folder / "split" / "train.jsonl").read_text().splitlines()]
    expected = list(zip(train["text"], train["text_pair"], train["label"]))
    assert [(r["text"], r["text_pair"], r["label"]) for r in written] == expected
    labels = [json.loads(line)["label"] for line in (folder / "split" / "test.jsonl").read_text().splitlines()]
    predicted = json.loads((folder / "setfit" / "predictions.json").read_text())
    assert len(predicted) == len(labels) == 24
    assert cells["setfit"]["accuracy"] == pytest.approx(sum(p == t for p, t in zip(predicted, labels)) / 24)
    table = (tmp_path / "results.md").read_text()
    assert "| setfit |" in table and "| contrastive |" in table and results["commits"][0] in table
    assert all(c["commit"] == results["commits"][0] for c in cells.values())
    assert not (folder / "setfit" / "checkpoints").exists() and not (folder.parent / "standard" / "run" / "best_model").exists()

    stamps = {m: (tmp_path / "runs" / "wikipairs" / "k8_s0" / m / "cell.json").stat().st_mtime_ns for m in cells}
    bench_fewlabel.main(argv)
    assert capsys.readouterr().out.count("(reused)") == 3
    assert stamps == {m: (tmp_path / "runs" / "wikipairs" / "k8_s0" / m / "cell.json").stat().st_mtime_ns for m in cells}


@pytest.mark.slow
def test_gpu_check_times_training_from_a_prepared_store_beside_training_from_memory(tmp_path):
    import json
    import subprocess

    out = tmp_path / "dry.json"
    runs = "bert_base:nlp_ssl:off:memory,bert_base:nlp_ssl:off:prepared"
    proc = subprocess.run([sys.executable, "gpu_check.py", "--dry-run", "--out", str(out), "--runs", runs],
                          cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    memory, prepared = report["runs"]
    assert (memory["data"], prepared["data"]) == ("memory", "prepared")
    assert memory["status"] == prepared["status"] == "ok", prepared["status"]
    spec = gpu_check.DRY_MODELS["bert_base"]
    # Trained on the store nlp-ssl prepare wrote: uint16 ids and nothing else, enough blocks for every step.
    assert prepared["store_bytes_per_token"] == 2.0
    assert prepared["store_blocks"] >= report["steps"] * spec["batch"] and prepared["steps_seen"] == report["steps"]
    assert prepared["loader_batches"] >= 2 and prepared["loader_tokens_per_s"] > 0
    ratio = report["ratios"]["bert_base compile off: prepared store / in memory tokens/s"]
    assert ratio == pytest.approx(prepared["tokens_per_s"] / memory["tokens_per_s"])
    assert "prepared store / in memory tokens/s" in proc.stdout and "its loader alone" in proc.stdout
