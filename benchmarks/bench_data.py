"""Preparing a corpus: ``nlp-ssl prepare`` against the bare tokenizer and against run_mlm's recipe.

On corpora it writes (the built-in corpus's documents, repeated in a new shuffled order each time,
as jsonl) at two or more sizes, every case in a subprocess of its own:

- ``bare tokenizer``: the fast tokenizer's ``encode_batch_fast`` on batches of 1,000 documents, timed
  around the calls alone (no reading, no packing, nothing written): the ceiling;
- ``nlp-ssl prepare``: tokenize, pack and write the store, with 1 and with N worker processes;
- ``run_mlm``: transformers' example recipe, ``datasets.map`` of ``tokenizer(..., return_special_tokens_mask=True)``
  then ``group_texts`` into blocks, with ``num_proc`` as ``preprocessing_num_workers``;
- ``tokenize_and_pack``: nlp_ssl's own path without a store (``datasets.map``, Arrow ``int32`` lists).

Loading the jsonl into 🤗 datasets' Arrow cache, which every case but the bare one starts with, happens
before the clock and the memory peak. It prints tokens per CPU second (all the case's processes: what
each process gives with a core of its own, less moved by other jobs than wall time) and per wall
second, bytes on disk per token (the written files, over the tokens they hold) and peak RSS (the
largest resident set of the case's main process during its step, and of its largest worker), then
the resume timing of a store: the first batch after skipping to an early and to a late step, through
the trainer's own loader (accelerate's seeded sampler and ``skip_first_batches``). One thread per
process (``RAYON_NUM_THREADS=1``).

    python benchmarks/bench_data.py [--mb 75 300] [--num_proc 2] [--workdir DIR]
    python benchmarks/bench_data.py --mb 20 80      # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from itertools import chain
from pathlib import Path

BLOCK = 128
BATCH = 1000
HERE = Path(__file__).resolve()


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> Path:
    """Built-in documents, shuffled anew on each pass, until ``megabytes`` of text."""
    from nlp_ssl.data.wiki import load_wiki_corpus

    texts = load_wiki_corpus()["en_train"]["text"]
    target, written, rng = megabytes * 1e6, 0, random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            for text in rng.sample(texts, len(texts)):
                f.write(json.dumps({"text": text}) + "\n")
                written += len(text.encode())
                if written >= target:
                    break
    return path


def bench_tokenizer(folder: Path) -> Path:
    """The MLM recipe's default tokenizer (WordPiece, 8,192 tokens), trained once on the built-in corpus."""
    from nlp_ssl.data.text import TextDataConfig, load_text_splits
    from nlp_ssl.text.tokenizers import TokenizerConfig, load_or_train_tokenizer

    if not (folder / "tokenizer.json").is_file():
        raw = load_text_splits(TextDataConfig(), seed=0)["train"]
        load_or_train_tokenizer(TokenizerConfig(), raw, "text").save_pretrained(folder)
    return folder


def documents(corpus: Path):
    """Batches of 1,000 texts, read as they are needed."""
    batch = []
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            batch.append(json.loads(line)["text"])
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def reset_peak_rss() -> None:
    """Start this process's peak resident set afresh (Linux: write 5 to clear_refs), so that a case's
    peak is its step's, not that of loading the jsonl into Arrow before it (the same for every case)."""
    Path("/proc/self/clear_refs").write_text("5")


class Clock:
    """Wall seconds and CPU seconds of this process and its finished children (workers, once joined):
    CPU seconds count only the work done, however busy the machine is with other jobs."""

    def __enter__(self):
        self.start = os.times()
        return self

    def __exit__(self, *exc):
        end = os.times()
        self.wall = end.elapsed - self.start.elapsed
        self.cpu = sum(end[i] - self.start[i] for i in range(4))


# ---------------------------------------------------------------------------------------------
# Cases (each runs in a subprocess of its own and prints one JSON line)


def case_bare(corpus: Path, tokenizer_dir: Path, work: Path, num_proc: int) -> dict:
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(tokenizer_dir).backend_tokenizer
    backend.no_truncation()
    tokens, wall, cpu = 0, 0.0, 0.0
    reset_peak_rss()
    for texts in documents(corpus):
        with Clock() as clock:
            encodings = backend.encode_batch_fast(texts, add_special_tokens=False)
        wall, cpu = wall + clock.wall, cpu + clock.cpu
        tokens += sum(len(e.ids) for e in encodings)
    return {"tokens": tokens, "seconds": wall, "cpu_seconds": cpu, "bytes": 0}


def case_prepare(corpus: Path, tokenizer_dir: Path, work: Path, num_proc: int) -> dict:
    from nlp_ssl.data.prepare import PrepareConfig, prepare
    from nlp_ssl.data.prepared import read_manifest, store_bytes
    from nlp_ssl.data.text import TextDataConfig, load_text_splits
    from nlp_ssl.text.tokenizers import TokenizerConfig

    data = TextDataConfig(train_file=str(corpus), block_size=BLOCK, cache_dir=str(work / "cache"),
                          num_proc=num_proc if num_proc > 1 else None)
    load_text_splits(data)  # the jsonl into Arrow, as the other cases' load_dataset, before the clock
    reset_peak_rss()
    with Clock() as clock:
        store = prepare(PrepareConfig(output_dir=str(work / "store"), data=data,
                                      tokenizer=TokenizerConfig(name_or_path=str(tokenizer_dir))))
    manifest = read_manifest(store)
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    return {"tokens": tokens, "seconds": clock.wall, "cpu_seconds": clock.cpu, "bytes": store_bytes(store, (".tokens",))}


def case_run_mlm(corpus: Path, tokenizer_dir: Path, work: Path, num_proc: int) -> dict:
    """transformers' examples/pytorch/language-modeling/run_mlm.py, without line_by_line, as it prepares data."""
    from datasets import load_dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    raw = load_dataset("json", data_files={"train": str(corpus)}, cache_dir=str(work / "cache"))
    reset_peak_rss()
    clock = Clock().__enter__()
    column_names = raw["train"].column_names

    def tokenize_function(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    tokenized = raw.map(tokenize_function, batched=True, num_proc=num_proc if num_proc > 1 else None,
                        remove_columns=column_names, desc="Running tokenizer on every text in dataset")

    def group_texts(examples):
        joined = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = len(joined[list(examples.keys())[0]]) // BLOCK * BLOCK
        return {k: [t[i : i + BLOCK] for i in range(0, total, BLOCK)] for k, t in joined.items()}

    grouped = tokenized.map(group_texts, batched=True, num_proc=num_proc if num_proc > 1 else None,
                            desc=f"Grouping texts in chunks of {BLOCK}")
    clock.__exit__()
    tokens = len(grouped["train"]) * BLOCK
    files = {f["filename"] for f in grouped["train"].cache_files}
    return {"tokens": tokens, "seconds": clock.wall, "cpu_seconds": clock.cpu,
            "bytes": sum(Path(f).stat().st_size for f in files),
            "intermediate_bytes": sum(Path(f["filename"]).stat().st_size for f in tokenized["train"].cache_files)}


def case_tokenize_and_pack(corpus: Path, tokenizer_dir: Path, work: Path, num_proc: int) -> dict:
    from datasets import load_dataset
    from transformers import AutoTokenizer

    from nlp_ssl.data.text import tokenize_and_pack

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    raw = load_dataset("json", data_files={"train": str(corpus)}, split="train", cache_dir=str(work / "cache"))
    reset_peak_rss()
    with Clock() as clock:
        blocks = tokenize_and_pack(raw, tokenizer, "text", BLOCK, num_proc=num_proc if num_proc > 1 else None)
    files = {f["filename"] for f in blocks.cache_files}
    return {"tokens": len(blocks) * BLOCK, "seconds": clock.wall, "cpu_seconds": clock.cpu,
            "bytes": sum(Path(f).stat().st_size for f in files)}


CASES = {"bare": case_bare, "prepare": case_prepare, "run_mlm": case_run_mlm, "tokenize_and_pack": case_tokenize_and_pack}
LABELS = {"bare": "bare tokenizer (encode_batch_fast)", "prepare": "nlp-ssl prepare (uint16 memmap)",
          "run_mlm": "run_mlm tokenize + group_texts", "tokenize_and_pack": "nlp_ssl tokenize_and_pack (Arrow)"}


def run_case(name: str, corpus: Path, tokenizer_dir: Path, work: Path, num_proc: int, keep: Path | None = None) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    cmd = [sys.executable, str(HERE), "--case", name, "--corpus", str(corpus), "--tokenizer", str(tokenizer_dir),
           "--workdir", str(work), "--num_proc", str(num_proc)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent.parent)
    if proc.returncode != 0:
        raise SystemExit(f"case {name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if keep is not None:
        shutil.rmtree(keep, ignore_errors=True)
        os.replace(work / "store", keep)
    shutil.rmtree(work, ignore_errors=True)
    return result


def status_kb(pid: int | str, field: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class WorkerPeak(threading.Thread):
    """The largest resident set any child process of this one reached, sampled every 20 ms. (getrusage
    will not do: a forked worker's ``ru_maxrss`` starts from its parent's, and exec keeps it.)"""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_kb, self.stop = 0, threading.Event()

    def run(self):
        me = os.getpid()
        while not self.stop.wait(0.02):
            try:
                children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
            except OSError:
                children = []
            self.peak_kb = max([self.peak_kb, *(status_kb(child, "VmRSS") for child in children)])


def measure(name: str, corpus: Path, tokenizer_dir: Path, work: Path, num_proc: int) -> dict:
    """One case's counts, with the peak resident sets (meaningful in a process of its own)."""
    workers = WorkerPeak()
    workers.start()
    result = CASES[name](corpus, tokenizer_dir, work, num_proc)
    workers.stop.set()
    result["peak_rss_mb"] = status_kb("self", "VmHWM") / 1024  # this address space's own high-water mark
    result["worker_peak_rss_mb"] = workers.peak_kb / 1024
    return result


# ---------------------------------------------------------------------------------------------
# Resume from a store: the first batch at an early and at a late step


def resume_timing(store: Path, tokenizer_dir: Path, batch_size: int = 32, repeats: int = 3) -> list[tuple[int, float]]:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    from transformers import AutoTokenizer

    from nlp_ssl.data.prepared import PreparedStore
    from nlp_ssl.data.text import TextDataConfig
    from nlp_ssl.objectives import MLMCollator

    blocks = PreparedStore(TextDataConfig(prepared=str(store), block_size=BLOCK)).blocks()["train"]
    collator = MLMCollator(AutoTokenizer.from_pretrained(tokenizer_dir), seed=0)
    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=0))
    loader = accelerator.prepare(torch.utils.data.DataLoader(
        blocks, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collator,
        generator=torch.Generator().manual_seed(0)))
    out = []
    for skip in (0, 10, len(loader) - 1):
        best = float("inf")
        for _ in range(repeats):
            loader.set_epoch(0)
            start = time.perf_counter()
            next(iter(accelerator.skip_first_batches(loader, skip)))
            best = min(best, time.perf_counter() - start)
        out.append((skip, best))
    return out[1:]  # the first point only warmed the loader up


# ---------------------------------------------------------------------------------------------


def report(results: dict, sizes: list[float], runs: list[tuple[str, int]]) -> None:
    """The table: ``results[size, case, processes]`` as the cases return them."""
    print(f"\nPreparing {BLOCK}-token blocks, WordPiece 8,192 (uint16 ids), {os.cpu_count()} cores, one thread per process. "
          "tok/CPU-s: tokens per CPU second of all the case's processes (what a free core would give each);\n"
          "tok/s: tokens per wall second, all processes together (shared machines move it); vs bare: tok/CPU-s over the bare "
          "tokenizer's at that size")
    header = (f"{'corpus':>7}  {'case':<36} {'procs':>5} {'tokens':>11} {'tok/CPU-s':>10} {'vs bare':>8} {'tok/s':>9} "
              f"{'bytes/tok':>9} {'peak RSS MB':>11} {'worker RSS':>10}")
    print(header)
    print("-" * len(header))
    for mb in sizes:
        bare = results.get((mb, "bare", 1))
        for name, procs in runs:
            r = results[mb, name, procs]
            per_cpu = r["tokens"] / r["cpu_seconds"]
            vs = f"{per_cpu / (bare['tokens'] / bare['cpu_seconds']):.0%}" if bare else "-"
            per_token = f"{r['bytes'] / r['tokens']:.2f}" if r["bytes"] else "-"
            worker = f"{r['worker_peak_rss_mb']:.0f}" if procs > 1 else "-"
            print(f"{mb:>5g}MB  {LABELS[name]:<36} {procs:>5} {r['tokens']:>11,} {per_cpu:>10,.0f} {vs:>8} "
                  f"{r['tokens'] / r['seconds']:>9,.0f} {per_token:>9} {r['peak_rss_mb']:>11.0f} {worker:>10}")
    small, large = min(sizes), max(sizes)
    print(f"\nPeak RSS at {large:g} MB over {small:g} MB ({large / small:.1f}x the text); extra disk of run_mlm's "
          "intermediate tokenized cache:")
    for name, procs in runs:
        a, b = results[small, name, procs], results[large, name, procs]
        extra = (f", intermediate cache {b['intermediate_bytes'] / b['tokens']:.2f} bytes/token"
                 if "intermediate_bytes" in b else "")
        print(f"  {LABELS[name]:<36} x{procs}: main {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x"
              + (f", worker {b['worker_peak_rss_mb'] / a['worker_peak_rss_mb']:.2f}x" if procs > 1 else "") + extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, nargs="+", default=[75, 300], help="corpus sizes in MB of text")
    parser.add_argument("--num_proc", type=int, default=2, help="processes of the parallel cases")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--workdir", default=None, help="where corpora and outputs go (default: a temporary folder)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return print(json.dumps(measure(args.case, Path(args.corpus), Path(args.tokenizer), Path(args.workdir), args.num_proc)))
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_data-"))
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = bench_tokenizer(root / "tokenizer")
    runs = [(name, procs) for name in args.cases
            for procs in ([1, args.num_proc] if name in ("prepare", "run_mlm") and args.num_proc > 1 else [1])]
    results = {}
    for mb in args.mb:
        corpus = write_corpus(root / f"corpus-{mb:g}mb.jsonl", mb)
        for name, procs in runs:
            keep = root / "store" if (mb, name, procs) == (max(args.mb), "prepare", 1) else None
            results[mb, name, procs] = run_case(name, corpus, tokenizer_dir, root / "work", procs, keep)
            print(f"  {mb:g} MB {name} x{procs}: {results[mb, name, procs]}", file=sys.stderr, flush=True)

    report(results, args.mb, runs)
    if (root / "store").is_dir():
        resume = resume_timing(root / "store", tokenizer_dir)
        print(f"\nResume from the {max(args.mb):g} MB store (first batch of 32 after skipping, accelerate's seeded sampler, "
              "best of 3): " + ", ".join(f"after {skip:,} batches {seconds * 1000:.1f} ms" for skip, seconds in resume))
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
