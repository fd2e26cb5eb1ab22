"""nlp_ssl's Trainer against the Hugging Face Trainer and a bare PyTorch loop, measured in one run.

For each model (``modernbert``: the tiny preset that ``recipes/pretrain_mlm.py`` trains, 30% masking;
``bert``: BERT tiny, 15% masking), on the same packed 128-token blocks of the built-in corpus with
the same WordPiece tokenizer, batch 32, the same steps, threads and precision:

- ``ours``: ``nlp_ssl.Trainer`` with ``MaskedLMTask`` (vocabulary projection at masked tokens only)
  and ``MLMCollator``, no evaluation or checkpoint during the measured steps;
- ``hf``: ``transformers.Trainer`` with the same settings (lr, schedule, clipping, logging every 20
  steps), the model computing its own loss (ModernBERT with ``sparse_prediction=True``, BERT dense,
  as transformers has no sparse BERT head) and ``DataCollatorForLanguageModeling`` at the same rate;
- ``hf_defaults``: what a user gets from ``TrainingArguments`` defaults (only the output folder,
  batch and steps set), the model's config defaults and the collator's default 15% masking;
- ``bare``: a plain PyTorch loop over the same task module, collator, optimizer (the one the trainer
  built, rebuilt with the same settings), schedule and clipping: the trainer's overhead.

Each run is a fresh subprocess. Throughput is steady-state: an optimizer-step hook stamps the end of
every step, the first ``--warmup`` steps are skipped, and tokens/s is the tokens of the remaining
steps over their wall time; tokens per CPU-second (process CPU time) is printed beside it because it
moves less when other processes share the cores. Then the cost of evaluation and of a checkpoint,
each timed inside short runs of both trainers. Ratios are of runs made in this invocation; with
``--repeats`` > 1 the rounds are interleaved, each ratio is taken within a round and the median over
rounds is printed with the rounds' own.

    python benchmarks/bench_trainer.py [--steps 60] [--warmup 10] [--threads 2] [--precision no|bf16]
                                       [--models modernbert,bert] [--repeats 1] [--out bench.json]
    python benchmarks/bench_trainer.py --profile [--plain_head]   # where the time of our step goes (torch.profiler)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

#: Per model: nlp_ssl preset, masking rate and learning rate (those of recipes/pretrain_mlm.py and of
#: its "classic BERT" line).
MODELS = {
    "modernbert": {"arch": "modernbert", "mlm_probability": 0.3, "learning_rate": 2e-3},
    "bert": {"arch": "bert", "mlm_probability": 0.15, "learning_rate": 1e-3},
}
KINDS = ("ours", "bare", "hf", "hf_defaults")
TARGET_VS_HF = 1.2
TARGET_OVERHEAD = 0.05
BLOCK = 128
WARMUP_RATIO, WEIGHT_DECAY, BETA2, EPSILON, LOG_EVERY = 0.03, 0.01, 0.98, 1e-6, 20
#: Short runs that time evaluation and checkpoints: evaluations at steps 2, 4, 6 and 7 (the end),
#: checkpoints at 3 and 6.
COST_STEPS, COST_EVAL_EVERY, COST_SAVE_EVERY = 7, 2, 3


# ---------------------------------------------------------------------------------------------- timing


class StepClock:
    """Wall and CPU time at the end of every optimizer step of any trainer (a global post-step hook),
    and the thread count and optimizer that the steps ran with."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.threads: int | None = None
        self.optimizer: dict | None = None

    def __enter__(self):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._handle = register_optimizer_step_post_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()

    def _hook(self, optimizer, args, kwargs):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        if self.threads is None:
            self.threads = torch.get_num_threads()
            self.optimizer = optimizer_settings(optimizer)

    def summary(self, warmup: int, tokens_per_step: int) -> dict:
        steps = len(self.wall)
        if steps <= warmup + 1:
            raise SystemExit(f"only {steps} optimizer steps were seen; use more --steps than --warmup + 1")
        measured = steps - 1 - warmup
        wall = self.wall[-1] - self.wall[warmup]
        cpu = self.cpu[-1] - self.cpu[warmup]
        gaps = [b - a for a, b in zip(self.wall[warmup:-1], self.wall[warmup + 1:])]
        return {
            "steps_seen": steps, "steps_measured": measured, "threads": self.threads, "optimizer": self.optimizer,
            "tokens_per_s": tokens_per_step * measured / wall,
            "tokens_per_cpu_s": tokens_per_step * measured / max(cpu, 1e-9),
            "step_ms_mean": 1000 * wall / measured, "step_ms_median": 1000 * statistics.median(gaps),
        }


def optimizer_settings(optimizer) -> dict:
    """The optimizer's class and constructor settings (lr, betas, fused...), to rebuild it elsewhere."""
    accepted = inspect.signature(type(optimizer).__init__).parameters
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in optimizer.defaults.items() if k in accepted}
    return {"class": type(optimizer).__name__, "settings": settings}


def timed(record: list, fn):
    """``fn`` that appends the seconds of each call to ``record``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record.append(time.perf_counter() - start)
    return wrapper


# ---------------------------------------------------------------------------------------------- data


def prepare_data(folder: Path, steps: int, batch_size: int, eval_blocks: int) -> dict:
    """The built-in corpus, its cached WordPiece tokenizer (the recipe's) and packed 128-token blocks,
    written to ``folder`` once for every run to load."""
    from nlp_ssl.data.text import TextDataConfig, load_text_splits, tokenize_and_pack
    from nlp_ssl.text.tokenizers import TokenizerConfig, load_or_train_tokenizer

    raw = load_text_splits(TextDataConfig(), seed=42)
    tokenizer = load_or_train_tokenizer(TokenizerConfig(), raw["train"], "text")
    train = tokenize_and_pack(raw["train"], tokenizer, "text", BLOCK)
    train = train.select(range(min(len(train), max(steps * batch_size, 4 * batch_size))))
    validation = tokenize_and_pack(raw["validation"], tokenizer, "text", BLOCK)
    validation = validation.select(range(min(len(validation), eval_blocks)))
    lengths = {len(ids) for ids in train["input_ids"]} | {len(ids) for ids in validation["input_ids"]}
    if lengths != {BLOCK}:  # tokens per step are then exactly batch × 128 for every trainer
        raise SystemExit(f"packed blocks of lengths {sorted(lengths)}, expected only {BLOCK}")
    tokenizer.save_pretrained(folder / "tokenizer")
    train.save_to_disk(folder / "train")
    validation.save_to_disk(folder / "validation")
    return {"train_blocks": len(train), "eval_blocks": len(validation), "vocab_size": len(tokenizer)}


def load_data(spec: dict):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    folder = Path(spec["data_dir"])
    return (AutoTokenizer.from_pretrained(folder / "tokenizer"), load_from_disk(folder / "train"),
            load_from_disk(folder / "validation"))


def build_model(spec: dict, tokenizer, hf_defaults: bool = False):
    """The same initial weights in every run (seeded), built by nlp_ssl from the preset."""
    from nlp_ssl.models import ModelConfig, special_token_fields
    from nlp_ssl.models import build_model as build

    extra = {}
    if spec["arch"] == "modernbert" and spec["kind"].startswith("hf") and not hf_defaults:
        extra["sparse_prediction"] = True  # transformers' own masked-token-only head
    torch.manual_seed(spec["seed"])
    return build(ModelConfig(arch=spec["arch"], size=spec.get("size", "tiny")), "masked_lm",
                 vocab_size=len(tokenizer), **special_token_fields(tokenizer), **extra)


# ---------------------------------------------------------------------------------------------- runs


def ours_config(spec: dict, output_dir: str, overrides: dict | None = None):
    from nlp_ssl.config import build_config
    from nlp_ssl.trainer import TrainConfig

    fields = {
        "output_dir": output_dir, "seed": spec["seed"], "train.max_steps": spec["steps"],
        "train.global_batch_size": spec["batch_size"], "impl.micro_batch_size": spec["batch_size"],
        "optim.learning_rate": spec["learning_rate"], "optim.weight_decay": WEIGHT_DECAY, "optim.adam_beta2": BETA2,
        "optim.adam_epsilon": EPSILON, "optim.warmup_ratio": WARMUP_RATIO, "train.max_grad_norm": 1.0,
        "impl.mixed_precision": spec["precision"], "log.every": LOG_EVERY, "eval.every": 10**9, "save.every": 10**9,
        "log.report_to": [], "impl.num_workers": spec.get("num_workers", 0),
    }
    if spec.get("compile"):
        fields["impl.compile"] = True
    fields.update(overrides or {})
    return build_config(TrainConfig, fields)


def run_ours(spec: dict, tmp: str) -> dict:
    from nlp_ssl.objectives import MLMCollator
    from nlp_ssl.tasks.masked_lm import MaskedLMTask
    from nlp_ssl.trainer import Trainer

    tokenizer, train, _ = load_data(spec)
    task = MaskedLMTask(build_model(spec, tokenizer))
    collator = MLMCollator(tokenizer, mlm_probability=spec["mlm_probability"], seed=spec["seed"])
    start = time.perf_counter()
    trainer = Trainer(ours_config(spec, tmp), task, train, collator, processor=tokenizer)
    with StepClock() as clock:
        results = trainer.fit()
    return {**clock.summary(spec["warmup"], spec["tokens_per_step"]), "fit_wall_s": time.perf_counter() - start,
            "last_train_loss": results.get("train_loss")}


def run_bare(spec: dict, tmp: str) -> dict:
    """The same step as the trainer's with nothing around it: forward, loss / count, backward, clip,
    optimizer, schedule."""
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    from nlp_ssl.models.architectures import optimizer_groups
    from nlp_ssl.objectives import MLMCollator
    from nlp_ssl.tasks.masked_lm import MaskedLMTask

    tokenizer, train, _ = load_data(spec)
    task = MaskedLMTask(build_model(spec, tokenizer)).train()
    collator = MLMCollator(tokenizer, mlm_probability=spec["mlm_probability"], seed=spec["seed"])
    optimizer_class = getattr(torch.optim, spec["optimizer"]["class"])
    groups = optimizer_groups(task.named_parameters(), task.model.config, spec["learning_rate"], WEIGHT_DECAY)
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["optimizer"]["settings"].items()}
    optimizer = optimizer_class(groups, **settings)
    steps = spec["steps"]
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(WARMUP_RATIO * steps), num_training_steps=steps)
    if spec.get("compile"):
        task.compile(dynamic=True)
    loader = DataLoader(train, batch_size=spec["batch_size"], shuffle=True, drop_last=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(spec["seed"]))
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if spec["precision"] == "bf16"
                else contextlib.nullcontext())
    step = epoch = 0
    start = time.perf_counter()
    with StepClock() as clock:
        while step < steps:
            collator.set_epoch(epoch)
            for batch in loader:
                with autocast:
                    loss_sum, count = task(**batch)["losses"]["loss"]
                (loss_sum / count).backward()
                torch.nn.utils.clip_grad_norm_(task.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step == steps:
                    break
            epoch += 1
    return {**clock.summary(spec["warmup"], spec["tokens_per_step"]), "fit_wall_s": time.perf_counter() - start}


def hf_trainer(spec: dict, tmp: str, train, eval_dataset=None, defaults: bool = False, **overrides):
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    tokenizer = spec["_tokenizer"]
    model = build_model(spec, tokenizer, hf_defaults=defaults)
    if defaults:  # as a user would write it
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"])
        collator = DataCollatorForLanguageModeling(tokenizer)
    else:
        settings = dict(
            output_dir=tmp, per_device_train_batch_size=spec["batch_size"], per_device_eval_batch_size=spec["batch_size"],
            max_steps=spec["steps"], learning_rate=spec["learning_rate"], weight_decay=WEIGHT_DECAY, adam_beta2=BETA2,
            adam_epsilon=EPSILON, lr_scheduler_type="linear", warmup_steps=int(WARMUP_RATIO * spec["steps"]),
            max_grad_norm=1.0, logging_steps=LOG_EVERY, save_strategy="no", eval_strategy="no", report_to="none",
            seed=spec["seed"], bf16=spec["precision"] == "bf16", use_cpu=not torch.cuda.is_available(),
            torch_compile=bool(spec.get("compile")), dataloader_num_workers=spec.get("num_workers", 0),
        )
        settings.update(overrides)
        args = TrainingArguments(**settings)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=spec["mlm_probability"], seed=spec["seed"])
    return Trainer(model=model, args=args, train_dataset=train, eval_dataset=eval_dataset, data_collator=collator)


def run_hf(spec: dict, tmp: str, defaults: bool = False) -> dict:
    tokenizer, train, _ = load_data(spec)
    spec = {**spec, "_tokenizer": tokenizer}
    start = time.perf_counter()
    trainer = hf_trainer(spec, tmp, train, defaults=defaults)
    with StepClock() as clock:
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {**clock.summary(spec["warmup"], spec["tokens_per_step"]), "fit_wall_s": time.perf_counter() - start,
            "last_train_loss": losses[-1] if losses else None}


def run_ours_costs(spec: dict, tmp: str) -> dict:
    """Seconds per evaluation (and per evaluation with the best-model save that follows it) and per
    checkpoint, timed inside a short real run."""
    from nlp_ssl.objectives import MLMCollator
    from nlp_ssl.tasks.masked_lm import MaskedLMTask
    from nlp_ssl.trainer import Trainer

    tokenizer, train, validation = load_data(spec)
    task = MaskedLMTask(build_model(spec, tokenizer))
    collator = MLMCollator(tokenizer, mlm_probability=spec["mlm_probability"], seed=spec["seed"])
    config = ours_config({**spec, "steps": COST_STEPS}, tmp, {"eval.every": COST_EVAL_EVERY, "save.every": COST_SAVE_EVERY})
    trainer = Trainer(config, task, train, collator, eval_dataset=validation, processor=tokenizer)
    evals, best, saves = [], [], []
    trainer.evaluate = timed(evals, trainer.evaluate)
    trainer._track_best = timed(best, trainer._track_best)
    trainer.save_checkpoint = timed(saves, trainer.save_checkpoint)
    trainer.fit()
    return {"eval_s": evals, "best_model_s": best, "save_s": saves, "eval_tokens": len(validation) * BLOCK}


def run_hf_costs(spec: dict, tmp: str) -> dict:
    tokenizer, train, validation = load_data(spec)
    spec = {**spec, "_tokenizer": tokenizer, "steps": COST_STEPS}
    trainer = hf_trainer(spec, tmp, train, eval_dataset=validation, eval_strategy="steps", eval_steps=COST_EVAL_EVERY,
                         save_strategy="steps", save_steps=COST_SAVE_EVERY, prediction_loss_only=True)
    evals, saves = [], []
    trainer.evaluate = timed(evals, trainer.evaluate)
    trainer._save_checkpoint = timed(saves, trainer._save_checkpoint)
    trainer.train()
    return {"eval_s": evals, "save_s": saves, "eval_tokens": len(validation) * BLOCK}


# ---------------------------------------------------------------------------------------------- profile

#: Labelled parts of our step, in the order they run.
PARTS = ("data", "  collator", "count_items", "forward", "  encoder", "  head + loss", "backward", "clip_grad_norm",
         "step_health", "optimizer.step", "zero_grad", "tokens_in + flops", "log_train")


def run_profile(spec: dict, tmp: str) -> dict:
    """torch.profiler over our trainer's steady steps, with each part of the step labelled by wrapping
    the trainer's and the task's methods on their instances (nothing in nlp_ssl is edited)."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile, schedule

    from nlp_ssl.models.architectures import mlm_parts
    from nlp_ssl.objectives import MLMCollator
    from nlp_ssl.tasks.masked_lm import MaskedLMTask
    from nlp_ssl.trainer import Trainer

    tokenizer, train, _ = load_data(spec)
    task = MaskedLMTask(build_model(spec, tokenizer))
    collator = LabelledCollator(MLMCollator(tokenizer, mlm_probability=spec["mlm_probability"], seed=spec["seed"]))
    trainer = Trainer(ours_config(spec, tmp), task, train, collator, processor=tokenizer)

    def label(owner, name, part):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with record_function(part):
                return fn(*args, **kwargs)
        setattr(owner, name, wrapper)

    encoder, _ = mlm_parts(task.model)
    for owner, name, part in [
        (trainer, "_count", "count_items"), (task, "forward", "forward"), (encoder, "forward", "  encoder"),
        (trainer.accelerator, "backward", "backward"), (trainer.accelerator, "clip_grad_norm_", "clip_grad_norm"),
        (trainer, "_step_health", "step_health"), (trainer, "_log_train", "log_train"),
        (task, "tokens_in", "tokens_in + flops"), (task, "flops", "tokens_in + flops"),
    ]:
        label(owner, name, part)
    import nlp_ssl.tasks.masked_lm as masked_lm  # MaskedLMTask.forward looks this name up at each call

    loss_fn = masked_lm.masked_positions_loss

    def head_loss(*args, **kwargs):
        with record_function("  head + loss"):
            return loss_fn(*args, **kwargs)
    masked_lm.masked_positions_loss = head_loss

    warmup, active = spec["warmup"], spec["steps"] - spec["warmup"] - 1
    prof = profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=0, warmup=warmup, active=active, repeat=1))
    clock = StepClock()
    with prof, clock:
        from torch.optim.optimizer import register_optimizer_step_post_hook
        handle = register_optimizer_step_post_hook(lambda *a: prof.step())
        try:
            trainer.fit()
        finally:
            handle.remove()
    totals = {}
    for event in prof.key_averages():
        key = event.key
        if key.startswith("enumerate(DataLoader)"):
            key = "data"
        elif key.startswith("Optimizer.step#"):
            key = "optimizer.step"
        elif key.startswith("Optimizer.zero_grad#"):
            key = "zero_grad"
        if key in PARTS:
            totals[key] = totals.get(key, 0.0) + event.cpu_time_total / 1000 / active
    wall = 1000 * (clock.wall[warmup - 1 + active] - clock.wall[warmup - 1]) / active
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return {"step_ms": wall, "parts_ms": totals, "top_ops": top, "threads": clock.threads}


class LabelledCollator:
    """A collator whose calls show as ``  collator`` in the profile."""

    def __init__(self, inner):
        self.inner = inner

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __call__(self, examples):
        from torch.autograd.profiler import record_function

        with record_function("  collator"):
            return self.inner(examples)


RUNNERS = {
    "ours": run_ours, "bare": run_bare, "hf": run_hf, "hf_defaults": functools.partial(run_hf, defaults=True),
    "ours_costs": run_ours_costs, "hf_costs": run_hf_costs, "profile": run_profile,
}


# ---------------------------------------------------------------------------------------------- parent


def worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    if spec.get("plain_head"):  # the masked-token head as it was before the chunked projection + loss
        import nlp_ssl.tasks.masked_lm as masked_lm

        masked_lm.use_fused = lambda hidden: False
    with tempfile.TemporaryDirectory() as tmp:
        result = RUNNERS[spec["kind"]](spec, tmp)
    Path(spec["result_path"]).write_text(json.dumps(result))


def launch(spec: dict, folder: Path, timeout: float = 1800, script: str = __file__, env: dict | None = None) -> dict:
    """Run ``spec`` in a fresh Python process (``script --worker spec.json``); its result, or a
    SystemExit with the end of its log."""
    name = f"{spec['model']}-{spec['kind']}-{spec.get('repeat', 0)}"
    spec = {**spec, "result_path": str(folder / f"{name}.result.json")}
    spec_path = folder / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore",
           **(env or {})}
    log = folder / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, script, "--worker", str(spec_path)], stdout=out, stderr=subprocess.STDOUT,
                              env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise SystemExit(f"run {name} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return json.loads(Path(spec["result_path"]).read_text())


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}


def rounds_note(ratio: dict, percent: bool = False) -> str:
    if len(ratio["rounds"]) < 2:
        return ""
    return "  rounds: " + ", ".join(f"{r:+.1%}" if percent else f"{r:.2f}x" for r in ratio["rounds"])


def print_summary(report: dict) -> None:
    s = report["settings"]
    print(f"\n{report['machine']['cpu']}, torch {report['machine']['torch']}, {s['threads']} threads, precision "
          f"{s['precision']}, batch {s['batch_size']} x {BLOCK} tokens, {s['steps']} steps ({s['warmup']} warm-up "
          f"skipped), load average {report['load_before']:.1f} before / {report['load_after']:.1f} after")
    for model, summary in report["summary"].items():
        runs = summary["runs"]
        print(f"\n{model}: steady-state training tokens/s (tokens per CPU-second), step ms (mean / median)"
              + (f"; medians of {summary['rounds']} rounds" if summary["rounds"] > 1 else ""))
        for kind in KINDS:
            if kind in runs:
                r = runs[kind]
                print(f"  {kind:12s} {r['tokens_per_s']:9.0f} ({r['tokens_per_cpu_s']:7.0f})   "
                      f"{r['step_ms_mean']:6.1f} / {r['step_ms_median']:6.1f}   threads {r['threads']}")
        ratios = summary["ratios"]
        if "ours_vs_hf" in ratios:
            r = ratios["ours_vs_hf"]
            print(f"  ours / hf           {r['wall']:5.2f}x  (CPU time {r['cpu']:5.2f}x)  target >= {TARGET_VS_HF}x  "
                  f"{'met' if r['wall'] >= TARGET_VS_HF else 'MISSED'}{rounds_note(r)}")
        if "ours_vs_hf_defaults" in ratios:
            r = ratios["ours_vs_hf_defaults"]
            print(f"  ours / hf_defaults  {r['wall']:5.2f}x  (CPU time {r['cpu']:5.2f}x){rounds_note(r)}")
        if "overhead_vs_bare" in ratios:
            r = ratios["overhead_vs_bare"]
            print(f"  overhead vs bare    {r['wall']:+6.1%}  (CPU time {r['cpu']:+6.1%})  target <= {TARGET_OVERHEAD:.0%}  "
                  f"{'met' if r['wall'] <= TARGET_OVERHEAD else 'MISSED'}{rounds_note(r, percent=True)}")
        for kind, costs in summary.get("costs", {}).items():
            line = (f"  {kind:12s} per evaluation of {costs['eval_tokens']} tokens {costs['eval_s']:.2f} s"
                    f" ({costs['eval_tokens'] / costs['eval_s']:.0f} tokens/s)")
            if "eval_with_best_model_s" in costs:
                line += f", with the best-model save after it {costs['eval_with_best_model_s']:.2f} s"
            print(line + f"; per checkpoint {costs['save_s']:.2f} s")


def summarise(model: str, runs: dict[str, list[dict]], costs: dict) -> dict:
    """Median over rounds of each kind's figures, and of each ratio taken within a round (the runs of
    one round ran minutes apart, so a change in the machine's load moves both sides of it)."""
    rounds = min(len(r) for r in runs.values())
    median = {kind: {key: statistics.median(run[key] for run in r[:rounds])
                     for key in ("tokens_per_s", "tokens_per_cpu_s", "step_ms_mean", "step_ms_median")}
              | {"threads": r[0]["threads"]} for kind, r in runs.items() if r}
    ratios = {}

    def ratio(name, top, bottom, minus=0.0):
        per_round = {which: [runs[top][i][f"tokens_per_{which}"] / runs[bottom][i][f"tokens_per_{which}"] - minus
                             for i in range(rounds)] for which in ("s", "cpu_s")}
        ratios[name] = {"wall": statistics.median(per_round["s"]), "cpu": statistics.median(per_round["cpu_s"]),
                        "rounds": per_round["s"]}

    if "ours" in median:
        for other in ("hf", "hf_defaults"):
            if other in median:
                ratio(f"ours_vs_{other}", "ours", other)
        if "bare" in median:
            ratio("overhead_vs_bare", "bare", "ours", minus=1.0)
    summary_costs = {}
    for kind, c in costs.items():
        entry = {"eval_tokens": c["eval_tokens"], "eval_s": statistics.median(c["eval_s"]),
                 "save_s": statistics.median(c["save_s"]) if c["save_s"] else None}
        if c.get("best_model_s"):
            entry["eval_with_best_model_s"] = entry["eval_s"] + statistics.median(c["best_model_s"])
        summary_costs[kind] = entry
    return {"rounds": rounds, "runs": median, "all_runs": runs, "ratios": ratios, "costs": summary_costs}


def print_profile(result: dict, spec: dict) -> None:
    step = result["step_ms"]
    print(f"\nour step on {spec['model']} tiny ({spec['threads']} threads, precision {spec['precision']}, "
          f"{spec['steps'] - spec['warmup'] - 1} profiled steps): {step:.1f} ms per step (wall, under the profiler)")
    parts = result["parts_ms"]
    top_level = 0.0
    for part in PARTS:
        if part in parts:
            print(f"  {part:20s} {parts[part]:7.2f} ms  {parts[part] / step:6.1%}")
            top_level += 0 if part.startswith("  ") else parts[part]
    print(f"  {'rest (loop, schedule)':20s} {step - top_level:7.2f} ms  {(step - top_level) / step:6.1%}")
    print("\nops by self CPU time:\n" + result["top_ops"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (the same for every run)")
    parser.add_argument("--warmup", type=int, default=10, help="first steps not measured")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["no", "bf16"], default="no", help="mixed precision of every run")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--models", default="modernbert,bert")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"which of {','.join(KINDS)} to run")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of every run, interleaved; figures and within-round ratios are medians over rounds")
    parser.add_argument("--eval_blocks", type=int, default=320, help="validation blocks for the evaluation cost")
    parser.add_argument("--no_costs", action="store_true", help="skip the evaluation and checkpoint timings")
    parser.add_argument("--compile", action="store_true", help="torch.compile in every run (nlp_ssl's compile setting)")
    parser.add_argument("--profile", action="store_true", help="only profile our step on the first model")
    parser.add_argument("--plain_head", action="store_true",
                        help="our masked-token head without the chunked projection + loss (the figures before it)")
    parser.add_argument("--out", help="write every figure to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    models = [m for m in args.models.split(",") if m]
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [m for m in models if m not in MODELS] + [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"unknown model or kind {unknown}: models are {list(MODELS)}, kinds {list(KINDS)}")
    if "bare" in kinds and "ours" not in kinds:
        raise SystemExit("--kinds bare needs ours too: the bare loop rebuilds the optimizer that our trainer made")
    if args.steps < args.warmup + 2:
        raise SystemExit("--steps must be at least --warmup + 2")
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = prepare_data(folder, args.steps, args.batch_size, args.eval_blocks)
        base = {"data_dir": str(folder), "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
                "precision": args.precision, "batch_size": args.batch_size, "seed": 42, "compile": args.compile,
                "tokens_per_step": args.batch_size * BLOCK, "plain_head": args.plain_head}
        if args.profile:
            model = models[0]
            spec = {**base, **MODELS[model], "model": model, "kind": "profile"}
            print_profile(launch(spec, folder), spec)
            return
        runs = {m: {k: [] for k in kinds} for m in models}
        costs = {m: {} for m in models}
        for repeat in range(args.repeats):
            for model in models:
                for kind in kinds:
                    spec = {**base, **MODELS[model], "model": model, "kind": kind, "repeat": repeat}
                    if kind == "bare":
                        spec["optimizer"] = runs[model]["ours"][-1]["optimizer"]
                    result = launch(spec, folder)
                    runs[model][kind].append(result)
                    print(f"{model:10s} {kind:12s} round {repeat + 1}: {result['tokens_per_s']:8.0f} tokens/s, "
                          f"{result['step_ms_median']:6.1f} ms median step, threads {result['threads']}", flush=True)
        if not args.no_costs:
            for model in models:
                for kind in ("ours_costs", "hf_costs"):
                    costs[model][kind.removesuffix("_costs")] = launch(
                        {**base, **MODELS[model], "model": model, "kind": kind}, folder)
    report = {
        "machine": machine_info(args.threads), "settings": {**vars(args), "data": data},
        "load_before": load_before, "load_after": os.getloadavg()[0], "wall_s": time.perf_counter() - started,
        "targets": {"ours_vs_hf": TARGET_VS_HF, "overhead_vs_bare": TARGET_OVERHEAD},
        "summary": {m: summarise(m, runs[m], costs[m]) for m in models},
    }
    print_summary(report)
    print(f"\nbenchmark wall time {report['wall_s']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
