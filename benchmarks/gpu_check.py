"""Tokens/s and MFU on one GPU: nlp_ssl's Trainer against the Hugging Face Trainer, compile off and on.

Prepared before any GPU run; at most ~5 minutes on one GPU, no downloads (models built from configs,
random tokens; a tokenizer made in memory from a numbered vocabulary), JSON written after every run
so that a cut-off check keeps what it measured:

- BERT-base MLM (12 layers, 768 hidden, BERT's 30,522-token vocabulary) at length 128, batch 256,
  15% masking, bf16 autocast: nlp_ssl (``MaskedLMTask``: vocabulary projection at masked tokens
  only, ``MLMCollator``) against ``transformers.Trainer`` with ``BertForMaskedLM`` and
  ``DataCollatorForLanguageModeling`` (dense head), with ``compile`` off and on (nlp_ssl's
  ``compile=true``; the HF Trainer's ``torch_compile=True``);
- GPT-2 124M CLM at length 1,024, batch 16, the same four runs;
- the prepared-data path: nlp_ssl's BERT-base run (compile off) reading its blocks from a store that
  ``nlp-ssl prepare`` wrote (``data.prepared``: uint16 memmaps, read by DataLoader workers) instead of
  from memory, and that store's loader alone (memmap rows through the MLM collator, no model), so
  that a store too slow to feed the GPU shows as a ratio below 1.

Runs go in that order (the prepared-data run right after the in-memory run it is compared with), each
in a fresh process; a run that would not fit in what is left of ``--budget_s`` is skipped and listed as
such; ``--runs`` picks some. Throughput is steady-state (an optimizer-step hook; the
first ``--warmup`` steps, compilation included, are skipped). MFU is each run's model FLOPs (nlp_ssl's
count: 6N + 12·L·d·T per position, the MLM head only where it runs, so a dense HF head counts at
every position) over the step time and the GPU's dense bf16 peak (nlp_ssl's table, else measured).

    python benchmarks/gpu_check.py --out gpu_check.json          # on a machine with one GPU
    python benchmarks/gpu_check.py --dry-run --out dry.json      # the same code on CPU, tiny sizes (~1 minute)

Targets (issue 16): >= 40% MFU for BERT-base at length 128, and >= 1.2x the HF Trainer on the same model;
the prepared store at >= 0.97x the in-memory run's tokens/s, its loader alone well above the training rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_trainer import StepClock, launch  # run from benchmarks/, like bench_collators.py

#: name -> nlp_ssl preset and run shape. ``vocab``: BERT's 30,522 and GPT-2's 50,257 tokens.
MODELS = {
    "bert_base": {"arch": "bert", "size": "base", "vocab": 30522, "length": 128, "batch": 256, "objective": "mlm"},
    "gpt2_124m": {"arch": "gpt2", "size": "base", "vocab": 50257, "length": 1024, "batch": 16, "objective": "clm"},
}
DRY_MODELS = {
    "bert_base": {"arch": "bert", "size": "tiny", "vocab": 1000, "length": 32, "batch": 4, "objective": "mlm"},
    "gpt2_124m": {"arch": "gpt2", "size": "tiny", "vocab": 1000, "length": 64, "batch": 4, "objective": "clm"},
}
#: Run order (model, trainer, compile, where the blocks come from), and seconds each needs at most on an
#: H100/H200-class GPU (start-up, compilation, steps).
RUNS = [(model, trainer, compiled, "memory") for model in MODELS for compiled in (False, True)
        for trainer in ("nlp_ssl", "hf")]
RUNS.insert(RUNS.index(("bert_base", "nlp_ssl", False, "memory")) + 1, ("bert_base", "nlp_ssl", False, "prepared"))
NEEDS_S = {False: 45, True: 100}
TARGET_MFU, TARGET_VS_HF, TARGET_PREPARED = 0.40, 1.2, 0.97
#: Batches the prepared store's loader is timed over on its own (after one that opens the workers).
LOADER_BATCHES = 30
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MLM_PROBABILITY, LEARNING_RATE = 0.15, 1e-4


def numbered_tokenizer(vocab_size: int):
    """A fast tokenizer with ``vocab_size`` tokens ([PAD] [UNK] [CLS] [SEP] [MASK], then w5, w6, ...),
    made in memory: the collators need its special tokens, never its text."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), vocab_size)})
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", eos_token="[SEP]")


def random_blocks(spec: dict):
    """``steps x batch`` rows of uniformly random non-special tokens, the same in every run."""
    import numpy as np
    from datasets import Dataset

    rng = np.random.default_rng(spec["seed"])
    ids = rng.integers(len(SPECIALS), spec["vocab"], size=(spec["steps"] * spec["batch"], spec["length"]))
    return Dataset.from_dict({"input_ids": ids.tolist()})


def build(spec: dict, tokenizer):
    from nlp_ssl.models import ModelConfig, build_model, special_token_fields

    head = "masked_lm" if spec["objective"] == "mlm" else "causal_lm"
    fields = {"vocab_size": spec["vocab"], **special_token_fields(tokenizer)}
    if spec["arch"] == "gpt2":
        fields["n_positions"] = max(1024, spec["length"])
    torch.manual_seed(spec["seed"])
    return build_model(ModelConfig(arch=spec["arch"], size=spec["size"]), head, **fields)


def flops_per_step(spec: dict, model, batch: dict, sparse: bool) -> float:
    """nlp_ssl's FLOP count of one training step on ``batch`` (``sparse``: the MLM head at masked
    tokens only, as nlp_ssl runs it; else at every token, as ``BertForMaskedLM`` does)."""
    from nlp_ssl.tasks.causal_lm import CausalLMTask
    from nlp_ssl.tasks.masked_lm import MaskedLMTask

    task = MaskedLMTask(model, sparse=sparse) if spec["objective"] == "mlm" else CausalLMTask(model)
    return task.flops(batch)


def peak_flops(device: torch.device) -> tuple[float, str]:
    from nlp_ssl.trainer import PEAK_FLOPS, measured_peak_flops

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_FLOPS.items():
            if key in name:
                return value, f"table ({key})"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return measured_peak_flops(str(device), dtype), "measured matmul peak"


def prepared_store(spec: dict, tokenizer, folder: Path):
    """The run's blocks as ``nlp-ssl prepare`` writes them: random numbered words, one document per
    block's worth, tokenized and packed into a store; opened as a run with ``data.prepared`` opens it."""
    import numpy as np

    from nlp_ssl.data.prepare import PrepareConfig, prepare
    from nlp_ssl.data.prepared import PreparedStore, store_bytes
    from nlp_ssl.data.text import TextDataConfig
    from nlp_ssl.text.tokenizers import TokenizerConfig

    rng = np.random.default_rng(spec["seed"])
    # A block's worth of words and more per document (a block holds length - 2 of them between [CLS] and [SEP]),
    # so that the 1% held out for validation packs at least one block.
    words = rng.integers(len(SPECIALS), spec["vocab"], size=(spec["steps"] * spec["batch"] + spec["batch"], spec["length"]))
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.jsonl"
    with corpus.open("w") as out:
        for row in words:
            out.write(json.dumps({"text": " ".join(f"w{i}" for i in row)}) + "\n")
    tokenizer.save_pretrained(folder / "tokenizer")
    data = TextDataConfig(train_file=str(corpus), block_size=spec["length"], validation_split=0.01,
                          cache_dir=str(folder / "cache"))
    store = prepare(PrepareConfig(output_dir=str(folder / "store"), data=data,
                                  tokenizer=TokenizerConfig(name_or_path=str(folder / "tokenizer"))))
    opened = PreparedStore(TextDataConfig(prepared=str(store), block_size=spec["length"]))
    train = opened.blocks()["train"]
    tokens = sum(split["tokens"] for split in opened.manifest["splits"].values())
    return train, {"store_blocks": len(train), "store_bytes_per_token": store_bytes(store) / tokens}


def time_loader(spec: dict, dataset, collator) -> dict:
    """Tokens/s of the data path alone: the dataset through a DataLoader with the run's workers and
    collator into (pinned, on GPUs) batches on the run's device; no model."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec["batch"], shuffle=True, collate_fn=collator,
                                         num_workers=spec["num_workers"], pin_memory=spec["device"] == "cuda",
                                         generator=torch.Generator().manual_seed(spec["seed"]))
    device = torch.device("cuda" if spec["device"] == "cuda" else "cpu")
    batches, start, seen = iter(loader), None, 0
    for index in range(min(LOADER_BATCHES + 1, len(loader))):
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        if index == 0:  # the first batch pays for starting the workers
            start = time.perf_counter()
        else:
            seen += batch["input_ids"].numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"loader_tokens_per_s": seen / (time.perf_counter() - start), "loader_batches": index}


def run_nlp_ssl(spec: dict, tmp: str) -> dict:
    from nlp_ssl.config import build_config
    from nlp_ssl.objectives import CLMCollator, MLMCollator
    from nlp_ssl.tasks.causal_lm import CausalLMTask
    from nlp_ssl.tasks.masked_lm import MaskedLMTask
    from nlp_ssl.trainer import TrainConfig, Trainer

    tokenizer = numbered_tokenizer(spec["vocab"])
    model = build(spec, tokenizer)
    if spec["objective"] == "mlm":
        task, collator = MaskedLMTask(model), MLMCollator(tokenizer, mlm_probability=MLM_PROBABILITY, seed=spec["seed"])
    else:
        task, collator = CausalLMTask(model), CLMCollator(tokenizer)
    fields = {
        "output_dir": str(Path(tmp) / "run"), "seed": spec["seed"], "train.max_steps": spec["steps"],
        "train.global_batch_size": spec["batch"], "impl.micro_batch_size": spec["batch"],
        "optim.learning_rate": LEARNING_RATE, "optim.warmup_ratio": 0.0, "impl.mixed_precision": spec["precision"],
        "log.every": 10, "eval.every": 10**9, "save.every": 10**9, "log.report_to": [],
        "impl.num_workers": spec["num_workers"], "log.progress_bar": False, "impl.compile": spec["compile"],
    }
    extra = {}
    if spec.get("data") == "prepared":
        data, extra = prepared_store(spec, tokenizer, Path(tmp) / "prepared")
        extra.update(time_loader(spec, data, collator))
    else:
        data = random_blocks(spec)
    sample = collator([data[i] for i in range(spec["batch"])])
    trainer = Trainer(build_config(TrainConfig, fields), task, data, collator)
    with StepClock() as clock:
        results = trainer.fit()
    return {**clock.summary(spec["warmup"], spec["batch"] * spec["length"]), **extra,
            "flops_per_step": flops_per_step(spec, model, sample, sparse=True), "trainer_reported_mfu": results.get("train_mfu")}


def run_hf(spec: dict, tmp: str) -> dict:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    tokenizer = numbered_tokenizer(spec["vocab"])
    model = build(spec, tokenizer)
    mlm = spec["objective"] == "mlm"
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=mlm, mlm_probability=MLM_PROBABILITY if mlm else None,
                                               seed=spec["seed"])
    args = TrainingArguments(
        output_dir=tmp, per_device_train_batch_size=spec["batch"], max_steps=spec["steps"], learning_rate=LEARNING_RATE,
        bf16=spec["precision"] == "bf16", torch_compile=spec["compile"], logging_steps=10, save_strategy="no",
        report_to="none", seed=spec["seed"], dataloader_num_workers=spec["num_workers"], disable_tqdm=True,
        use_cpu=spec["device"] == "cpu",
    )
    data = random_blocks(spec)
    sample = collator([data[i] for i in range(spec["batch"])])
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
    with StepClock() as clock:
        trainer.train()
    return {**clock.summary(spec["warmup"], spec["batch"] * spec["length"]),
            "flops_per_step": flops_per_step(spec, model, sample, sparse=False)}


def worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    runner = run_nlp_ssl if spec["trainer"] == "nlp_ssl" else run_hf
    with tempfile.TemporaryDirectory() as tmp:
        result = runner(spec, tmp)
    device = torch.device("cuda" if spec["device"] == "cuda" else "cpu")
    peak, source = spec.get("peak") or peak_flops(device)
    result.update(peak_flops=peak, peak_source=source,
                  mfu=result["flops_per_step"] / (result["step_ms_mean"] / 1000) / peak)
    Path(spec["result_path"]).write_text(json.dumps(result))


def machine(device: str) -> dict:
    info = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "device": device}
    if device == "cuda":
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, gpus=torch.cuda.device_count())
    return info


def ratios(runs: list[dict]) -> dict:
    out = {}
    done = {(r["model"], r["trainer"], r["compile"], r["data"]): r for r in runs if r["status"] == "ok"}
    for model in MODELS:
        for compiled in (False, True):
            ours, hf = done.get((model, "nlp_ssl", compiled, "memory")), done.get((model, "hf", compiled, "memory"))
            if ours and hf:
                out[f"{model} compile {'on' if compiled else 'off'}: nlp_ssl / hf tokens/s"] = (
                    ours["tokens_per_s"] / hf["tokens_per_s"])
            prepared = done.get((model, "nlp_ssl", compiled, "prepared"))
            if ours and prepared:
                name = f"{model} compile {'on' if compiled else 'off'}"
                out[f"{name}: prepared store / in memory tokens/s"] = prepared["tokens_per_s"] / ours["tokens_per_s"]
                out[f"{name}: prepared store's loader alone / its training tokens/s"] = (
                    prepared["loader_tokens_per_s"] / prepared["tokens_per_s"])
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--budget_s", type=float, default=290, help="stop starting runs after this many seconds")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=12, help="steps not measured (compilation happens in them)")
    parser.add_argument("--num_workers", type=int, default=2, help="data loader workers of both trainers")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="CPU, tiny models, compile off: checks that the script works, measures nothing useful")
    parser.add_argument("--dry-run-compile", dest="dry_compile", action="store_true",
                        help="with --dry-run, also the compile runs (torch.compile on CPU: several minutes)")
    parser.add_argument("--runs", help="only these runs, comma-separated model:trainer:on|off:memory|prepared "
                        "(e.g. bert_base:nlp_ssl:off:prepared)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.steps < args.warmup + 2:
        raise SystemExit("--steps must be at least --warmup + 2")
    started = time.perf_counter()
    dry = args.dry_run
    device = "cpu" if dry or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not dry:
        raise SystemExit("no CUDA GPU here: run with --dry-run to check the script on CPU")
    models = DRY_MODELS if dry else MODELS
    steps, warmup = (4, 1) if dry else (args.steps, args.warmup)
    report = {"machine": machine(device), "dry_run": dry, "steps": steps, "warmup": warmup,
              "precision": "no" if dry else "bf16",
              "targets": {"mfu": TARGET_MFU, "vs_hf": TARGET_VS_HF, "prepared_vs_memory": TARGET_PREPARED}, "runs": []}
    chosen = None if not args.runs else set(args.runs.split(","))
    env = {"CUDA_VISIBLE_DEVICES": ""} if dry else {}
    threads = max(1, (os.cpu_count() or 2) // 2)
    with tempfile.TemporaryDirectory() as tmp:
        for model, trainer, compiled, data in RUNS:
            name = f"{model}:{trainer}:{'on' if compiled else 'off'}:{data}"
            if chosen is not None and name not in chosen:
                continue
            entry = {"model": model, "trainer": trainer, "compile": compiled, "data": data, **models[model]}
            left = args.budget_s - (time.perf_counter() - started)
            if dry and compiled and not args.dry_compile:
                entry["status"] = "skipped: compile is not tried in a dry run"
            elif not dry and left < NEEDS_S[compiled]:
                entry["status"] = f"skipped: {left:.0f} s of the budget left, a run needs up to {NEEDS_S[compiled]} s"
            else:
                spec = {**models[model], "model": model, "kind": f"{trainer}_{'on' if compiled else 'off'}_{data}", "seed": 0,
                        "trainer": trainer, "compile": compiled, "steps": steps, "warmup": warmup, "device": device,
                        "precision": report["precision"], "num_workers": 0 if dry else args.num_workers,
                        "threads": threads, "data": data}
                done = [r for r in report["runs"] if r["status"] == "ok"]
                if done:  # one peak for every run, so that their MFUs compare as their tokens/s do
                    spec["peak"] = [done[0]["peak_flops"], done[0]["peak_source"]]
                try:
                    entry.update(launch(spec, Path(tmp), timeout=max(left, 60) if not dry else 300, script=__file__,
                                        env=env), status="ok")
                except subprocess.TimeoutExpired:
                    entry["status"] = "failed: out of time"
                except SystemExit as e:  # the run failed: keep its message, go on with the others
                    entry["status"] = f"failed: {e}"
            report["runs"].append(entry)
            report["ratios"] = ratios(report["runs"])
            report["wall_s"] = time.perf_counter() - started
            Path(args.out).write_text(json.dumps(report, indent=1))
            line = entry["status"] if entry["status"] != "ok" else (
                f"{entry['tokens_per_s']:10.0f} tokens/s, MFU {entry['mfu']:6.1%}, step {entry['step_ms_mean']:.1f} ms")
            if entry["status"] == "ok" and data == "prepared":
                line += f"; its loader alone {entry['loader_tokens_per_s']:.0f} tokens/s"
            print(f"{model:10s} {trainer:8s} compile {'on ' if compiled else 'off'} {data:8s}  {line}", flush=True)
    for name, value in report.get("ratios", {}).items():
        target = (f" (target >= {TARGET_VS_HF}x)" if "/ hf" in name else f" (target >= {TARGET_PREPARED}x)"
                  if "/ in memory" in name else "")
        print(f"{name}: {value:.2f}x{target}")
    for run in report["runs"]:
        if run["model"] == "bert_base" and run["trainer"] == "nlp_ssl" and run["data"] == "memory" and run["status"] == "ok":
            print(f"bert_base nlp_ssl compile {'on' if run['compile'] else 'off'}: MFU {run['mfu']:.1%} "
                  f"(target >= {TARGET_MFU:.0%})")
    print(f"wrote {args.out} after {report['wall_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
