"""One Accelerate trainer for every objective and modality.

Steps are optimizer steps. A global batch and a per-process micro batch give the gradient
accumulation; the LR schedule is sized in optimizer steps and stepped once per optimizer step, so
it is right under accumulation and with N processes (the transformers ``no_trainer`` examples let
Accelerate step it N times). Losses are normalised by the items in the whole optimizer step, which
makes one process and N processes agree at the same global batch.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    ProjectConfiguration,
    broadcast_object_list,
    is_torchdata_stateful_dataloader_available,
    set_seed,
)
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm
from transformers import get_scheduler

from nlp_ssl import atomic, backends, machine, run_lock
from nlp_ssl import checkpointing as ckpt
from nlp_ssl.config import check_ranges, to_dict
from nlp_ssl.errors import (
    EXIT_INTERRUPTED,
    CheckpointError,
    CheckpointWriteFailed,
    ConfigError,
    Diverged,
    NlpSslError,
    Preempted,
    RunEnded,
)
from nlp_ssl.hub import HF_MODEL_SUBDIR, HubConfig, HubError, HubPusher, apply_timeout, resolve_hub_resume
from nlp_ssl.models.architectures import optimizer_groups
from nlp_ssl.reporting import RunDescription, plot_loss_curves, write_model_card
from nlp_ssl.tasks.base import Task

logger = logging.getLogger("nlp_ssl.trainer")

#: How the run ended: ``running``, ``finished``, ``preempted``, ``diverged``, ``write_failed``,
#: ``bad_input`` (exit 2) or ``crashed`` (exit 1, a bug).
STATUS_FILE = "run_status.json"

#: In a checkpoint: where a streamed training set stopped (the stateful loader's ``state_dict``).
STREAM_STATE_FILE = "train_stream_state.pt"
STATUS_NAMES = {Preempted: "preempted", Diverged: "diverged", CheckpointWriteFailed: "write_failed"}

#: Seconds a stopping run waits for Hub uploads in flight: schedulers allow ~30 s after SIGTERM.
PREEMPT_HUB_WAIT_S = 20.0

#: Dense bf16/fp16 peak FLOP/s of common accelerators, for MFU; set ``peak_flops`` for others.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10G": 125e12, "L4": 121e12, "V100": 125e12, "4090": 165e12}


@dataclass
class TrainConfig(HubConfig):
    output_dir: str = "outputs/run"
    seed: int = 42
    max_steps: int = 1000
    #: Examples per optimizer step, over all processes and accumulation.
    global_batch_size: int = 32
    #: Examples per forward pass on one process. ``auto``: global_batch_size / processes, one forward
    #: pass per optimizer step; a number caps it and the rest is accumulated. ``make_accelerator``
    #: replaces ``auto`` by the number it stands for, so code after it reads an int.
    micro_batch_size: int | str = "auto"
    eval_batch_size: int | None = None
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    #: Layer-wise learning-rate decay for fine-tuning (BEiT, MAE): block i of n learns at
    #: ``layer_decay ** (n - i)`` of the rate, embeddings at ``layer_decay ** (n + 1)``; 1.0 is off.
    layer_decay: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = 0
    #: Used when warmup_steps is 0.
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    #: ``auto``: bf16 where the hardware has it, else full precision.
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    log_every: int = 10
    eval_every: int = 200
    #: Cap on evaluation batches per process (None: the whole validation set).
    eval_batches: int | None = None
    save_every: int = 500
    #: Checkpoints kept under output_dir/checkpoints (the best model is kept apart).
    save_total_limit: int = 2
    #: ``auto`` (latest checkpoint in output_dir, or a fresh start), a checkpoint path, or empty.
    resume: str | None = None
    metric_for_best: str = "loss"
    #: None: lower is better for loss and perplexity, higher for anything else.
    greater_is_better: bool | None = None
    #: Stop after this many evaluations without improvement (0: never).
    early_stopping_patience: int = 0
    #: Leave the best model (by metric_for_best), not the last one, in output_dir.
    load_best_at_end: bool = False
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    num_workers: int = 0
    #: Batches each DataLoader worker prepares ahead (only with num_workers > 0; None: PyTorch's 2).
    prefetch_factor: int | None = None
    #: Stop after this much wall-clock training (seconds, or a number with s, m or h: ``30m``, ``2h``),
    #: summed over resumes; the run then evaluates and saves as at max_steps. None: no budget.
    time_budget: str | None = None
    #: torch.compile the task (model and loss); saved folders and checkpoints are the same as without.
    compile: bool = False
    #: TF32 matmuls and convolutions on CUDA GPUs of compute capability 8.0 and later; ignored elsewhere.
    allow_tf32: bool = True
    progress_bar: bool = True
    #: Hardware peak FLOP/s for MFU (None: looked up for known GPUs, else measured by a short matmul probe).
    peak_flops: float | None = None
    # The Hub options (push_to_hub, hub_model_id, hub_strategy ...) are inherited from HubConfig.
    #: Stop (exit 3) after this many optimizer steps in a row with a non-finite loss or gradient
    #: norm; each such step is skipped, as fp16 loss scaling skips an overflow.
    max_bad_steps: int = 10

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.micro_batch_size, float) and self.micro_batch_size.is_integer():
            self.micro_batch_size = int(self.micro_batch_size)
        if self.micro_batch_size != "auto":
            if not isinstance(self.micro_batch_size, int) or isinstance(self.micro_batch_size, bool):
                raise ConfigError(f"micro_batch_size must be an integer or auto, got {self.micro_batch_size!r}")
            check_ranges(self, micro_batch_size="(0, inf)")
        if self.time_budget is not None:
            self.time_budget = str(self.time_budget)
            parse_duration(self.time_budget)
        check_ranges(
            self, max_steps="(0, inf)", global_batch_size="(0, inf)",
            eval_batch_size="(0, inf)", learning_rate="(0, inf)", weight_decay="[0, inf)", layer_decay="(0, 1]",
            adam_beta1="[0, 1)", adam_beta2="[0, 1)", adam_epsilon="(0, inf)", warmup_steps="[0, inf)",
            warmup_ratio="[0, 1)", max_grad_norm="[0, inf)", log_every="(0, inf)", eval_every="(0, inf)",
            eval_batches="(0, inf)", save_every="(0, inf)", save_total_limit="[0, inf)",
            early_stopping_patience="[0, inf)", num_workers="[0, inf)", peak_flops="(0, inf)",
            max_bad_steps="(0, inf)", prefetch_factor="(0, inf)",
        )

    @property
    def time_budget_s(self) -> float | None:
        return None if self.time_budget is None else parse_duration(self.time_budget)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(value) -> float:
    """Seconds from ``1800``, ``90s``, ``30m``, ``1.5h``; anything else (or not > 0) is a ConfigError."""
    text = str(value).strip().lower()
    scale = _DURATION_UNITS.get(text[-1:]) if text else None
    try:
        seconds = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ConfigError(f"time_budget must be a positive number of seconds or a number with s, m or h "
                          f"(e.g. 1800, 30m, 2h), got {value!r}")
    return seconds


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    train_tokens: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    #: Optimizer steps skipped for a non-finite loss or gradient norm: in all, and the current streak.
    skipped_steps: int = 0
    bad_steps_in_row: int = 0
    #: Wall-clock seconds in the training loop, summed over resumes (what ``time_budget`` counts).
    train_time_s: float = 0.0
    history: list[dict] = field(default_factory=list)


def resolve_mixed_precision(choice: str) -> str:
    """``auto``: bf16 on CUDA with bf16 and on CPUs with native bf16 (:mod:`nlp_ssl.machine`), else ``no``."""
    return machine.auto_mixed_precision() if choice == "auto" else choice


def _launched_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_hub_resume(resume: str | None) -> bool:
    return resume == "hub" or (resume or "").startswith("hf://")


def make_accelerator(config: TrainConfig) -> Accelerator:
    """The run's Accelerator; create it first so data preparation can use ``main_process_first``.

    It also locks ``output_dir`` for this run and checks ``resume`` (a finished run, a damaged
    checkpoint) and the batch sizes, so that those fail before any data is prepared, and gives every
    Hub request of the run (models, datasets, pushes) the ``hub_timeout``. It settles
    ``micro_batch_size: auto`` to a number, and sets up the machine: on CPU each process takes its
    share of the cores (unless the user set OMP_NUM_THREADS), TF32 on Ampere and later GPUs.
    """
    apply_timeout(config.hub_timeout)
    trackers = [t for t in config.report_to if t and t != "none"]
    accelerator = Accelerator(
        # `accelerate launch --multi_gpu` on a machine without GPUs: run real DDP over gloo on CPU
        # instead of N independent copies of the run.
        cpu=_launched_distributed() and not torch.cuda.is_available(),
        mixed_precision=resolve_mixed_precision(config.mixed_precision),
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=config.output_dir, logging_dir=str(Path(config.output_dir) / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed, even_batches=False),
        step_scheduler_with_optimizer=False,
    )
    config.micro_batch_size = resolve_micro_batch_size(config, accelerator.num_processes)
    accumulation = gradient_accumulation_steps(config, accelerator.num_processes)
    _set_up_machine(config, accelerator, accumulation)
    backends.configure(accelerator, config.micro_batch_size, accumulation, config.max_grad_norm)
    lock_output_dir(accelerator, config.output_dir)
    if not is_hub_resume(config.resume):
        _RESOLVED[_resume_key(config)] = ckpt.resolve_resume(config.resume, Path(config.output_dir) / "checkpoints",
                                                             config.max_steps)
    set_seed(config.seed)
    return accelerator


def _set_up_machine(config: TrainConfig, accelerator: Accelerator, accumulation: int) -> None:
    """CPU threads and TF32, and one log line with what the run uses."""
    device = accelerator.device
    threads, why = torch.get_num_threads(), "PyTorch's default"
    if device.type == "cpu":
        threads, why = machine.set_cpu_threads(machine.local_world_size(accelerator.num_processes))
    tf32 = machine.set_tf32(config.allow_tf32, device)
    if accelerator.is_local_main_process:
        precision = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}.get(accelerator.mixed_precision,
                                                                                       accelerator.mixed_precision)
        logger.info(
            "%s, %d process(es), %d CPU thread(s) each (%s); precision %s%s (mixed_precision=%s); compile %s; "
            "micro-batch %d × %d accumulation × %d process(es) = %d", device, accelerator.num_processes, threads, why,
            precision, " + TF32" if tf32 else "", config.mixed_precision, "on" if config.compile else "off",
            config.micro_batch_size, accumulation, accelerator.num_processes, config.global_batch_size,
        )


#: Resume targets that ``make_accelerator`` already resolved (and verified), for the Trainer to take.
_RESOLVED: dict[tuple[str, str | None], Path | None] = {}


def _resume_key(config: TrainConfig) -> tuple[str, str | None]:
    return str(Path(config.output_dir).resolve()), config.resume


def lock_output_dir(accelerator: Accelerator, output_dir: str) -> None:
    """The main process locks ``output_dir``; every process raises the same one-line error if it can't."""
    error = None
    if accelerator.is_main_process:
        try:
            run_lock.acquire(output_dir)
        except ConfigError as e:
            error = str(e)
    if accelerator.num_processes > 1:
        shared = [error]
        broadcast_object_list(shared, from_process=0)
        error = shared[0]
    if error is not None:
        raise ConfigError(error)


class _StopSignals:
    """SIGTERM and SIGINT ask the run to stop after the current optimizer step, with a checkpoint.

    A second SIGINT aborts at once without saving (for a user who really means Ctrl-C). Handlers are
    installed only around the training loop, and only from the main thread (signals reach no other).
    """

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received is not None and signum == signal.SIGINT:
            print("second SIGINT: aborting without saving", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)
        if self.received is None:
            self.received = name
            logger.warning("received %s: finishing this optimizer step, then saving a checkpoint and stopping", name)


def resolve_micro_batch_size(config: TrainConfig, num_processes: int) -> int:
    """``micro_batch_size``, with ``auto`` as the global batch split evenly over the processes."""
    if config.micro_batch_size != "auto":
        return config.micro_batch_size
    if config.global_batch_size % num_processes:
        raise ConfigError(
            f"global_batch_size {config.global_batch_size} cannot be split evenly over {num_processes} processes "
            f"(micro_batch_size auto): use a multiple of {num_processes}, or set micro_batch_size"
        )
    return config.global_batch_size // num_processes


def gradient_accumulation_steps(config: TrainConfig, num_processes: int) -> int:
    per_step = resolve_micro_batch_size(config, num_processes) * num_processes
    if config.global_batch_size % per_step:
        raise ConfigError(
            f"global_batch_size {config.global_batch_size} is not a multiple of micro_batch_size "
            f"{config.micro_batch_size} × {num_processes} process(es)"
        )
    return config.global_batch_size // per_step


def _peak_flops(config: TrainConfig, device: torch.device, mixed_precision: str) -> float:
    """The hardware peak FLOP/s for MFU: ``peak_flops``, the table for known GPUs, else measured."""
    if config.peak_flops:
        return config.peak_flops
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_FLOPS.items():
            if key in name:
                return value
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)
    return measured_peak_flops(str(device), dtype)


@functools.cache
def measured_peak_flops(device: str, dtype: torch.dtype, budget_s: float = 0.4) -> float:
    """The best FLOP/s of square matmuls in ``dtype`` on ``device`` within about ``budget_s`` (at most
    twice that), the size doubling while the next fits: the roofline of hardware that no table knows.
    Once per process; the inputs come from a private generator, so the run's RNG is untouched."""
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    best, size, largest, deadline = 0.0, 512, 8192 if cuda else 2048, time.perf_counter() + budget_s
    a = b = None
    while True:
        if a is None or a.shape[0] != size:
            a, b = (torch.rand(size, size, generator=generator).to(device, dtype) for _ in range(2))
            a @ b  # warm-up: first-call dispatch and allocation
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        took = time.perf_counter() - start
        best = max(best, 2 * size**3 / max(took, 1e-9))
        left = deadline - time.perf_counter()
        if left <= 0:
            return best
        if size < largest and 16 * took < left + budget_s:  # 8× the work, run twice (warm-up)
            size *= 2


@contextlib.contextmanager
def _deterministic_kernels():
    """Compiled kernels without atomic adds: inductor otherwise accumulates scatters (an embedding's
    gradient) with atomic adds from parallel threads, in an order that changes from run to run, and
    a resumed run could not repeat an uninterrupted one. Eager ops only warn where they have no
    deterministic version; uninitialised memory is not filled (no cost)."""
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _flat_hparams(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_hparams(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        elif value is not None:
            out[name] = str(value)
    return out


class Trainer:
    """Train ``task`` on ``train_dataset`` batched by ``collator``; evaluate, checkpoint, resume, report.

    ``run_config`` is the recipe's whole config (saved with checkpoints and in the model card);
    ``processor`` (a tokenizer or image processor) is saved beside the model. ``batch_sampler``
    (optional) picks the indices of each training micro-batch, e.g. to alternate between datasets
    (:class:`nlp_ssl.data.mixing.AlternatingBatchSampler`); it must yield ``micro_batch_size``
    indices per batch, and its ``set_epoch`` is called each epoch.
    """

    def __init__(
        self,
        config: TrainConfig,
        task: Task,
        train_dataset,
        collator,
        eval_dataset=None,
        eval_collator=None,
        processor=None,
        accelerator: Accelerator | None = None,
        description: RunDescription | None = None,
        run_config=None,
        batch_sampler=None,
    ):
        self.config = config
        self.accelerator = accelerator or make_accelerator(config)
        self.output_dir = Path(config.output_dir)
        lock_output_dir(self.accelerator, config.output_dir)  # held already when the recipe made the accelerator
        self.checkpoint_root = self.output_dir / "checkpoints"
        self.resume_from = self._resolve_resume()
        config.micro_batch_size = resolve_micro_batch_size(config, self.accelerator.num_processes)
        self.accumulation = gradient_accumulation_steps(config, self.accelerator.num_processes)
        self.task = task
        self.processor = processor
        self.description = description or RunDescription()
        self.run_config = to_dict(run_config) if run_config is not None else to_dict(config)
        self.hub = HubPusher(config, self.output_dir) if config.push_to_hub and self.accelerator.is_main_process else None
        self.state = TrainerState()
        self._greater_is_better = (
            config.greater_is_better if config.greater_is_better is not None
            else config.metric_for_best not in ("loss", "perplexity")
        )
        self.train_collator = collator
        self.batch_sampler = batch_sampler
        #: A streamed training set with a stateful loader; set by a resume that restored it.
        self._stream_state, self._stream_resumed, self._stream_stale = False, None, False
        if batch_sampler is not None and getattr(batch_sampler, "batch_size", None) != config.micro_batch_size:
            raise ConfigError(
                f"batch_sampler gives batches of {getattr(batch_sampler, 'batch_size', None)}, "
                f"not micro_batch_size {config.micro_batch_size}"
            )
        self.train_loader = self._loader(train_dataset, collator, config.micro_batch_size, train=True)
        self.eval_loader = None
        if eval_dataset is not None:
            self.eval_loader = self._loader(eval_dataset, eval_collator or collator,
                                            config.eval_batch_size or config.micro_batch_size, train=False)
        self.optimizer = self._optimizer()
        self.scheduler = get_scheduler(
            "cosine" if config.lr_schedule == "cosine"
            else "linear" if config.lr_schedule == "linear" else "constant_with_warmup",
            self.optimizer,
            num_warmup_steps=config.warmup_steps or int(config.warmup_ratio * config.max_steps),
            num_training_steps=config.max_steps,
        )
        if config.compile:
            # In place (nn.Module.compile): the module tree and its state_dict keys stay as they are, so
            # checkpoints and saved folders match an uncompiled run's.
            self.task.compile(dynamic=True)
        self.model, self.optimizer = self.accelerator.prepare(self.task, self.optimizer)
        self.train_loader = self.accelerator.prepare(self.train_loader)
        if self.eval_loader is not None:
            self.eval_loader = self.accelerator.prepare(self.eval_loader)
        # The scheduler is stepped by hand once per optimizer step, and saved with the state.
        self.accelerator.register_for_checkpointing(self.scheduler)
        self._peak = _peak_flops(config, self.accelerator.device, self.accelerator.mixed_precision)
        #: Process-wide settings held for the run (until fit returns).
        self._run_settings = contextlib.ExitStack()
        if config.compile:
            # For the whole run: compiled graphs are guarded on it, so leaving it would recompile.
            self._run_settings.enter_context(_deterministic_kernels())
            self._compile_on_a_fixed_batch(train_dataset, collator)

    def _compile_on_a_fixed_batch(self, dataset, collator) -> None:
        """Compile now, before the clock of the training loop starts (tokens/s and ``time_budget`` see
        no compile time), on the first examples of the data as stored, with the RNG and gradients left
        as they were. ``dynamic=True`` lets every later batch use these kernels, whatever its sizes
        (a sparse MLM head's change every batch), so no recompile happens mid-run. And a resumed run
        compiles on the same batch as an uninterrupted one: inductor sizes some kernels from the
        first shapes it sees (Triton's split reductions), which could otherwise change the last bits
        of the weights after a resume. (On CPU that did not happen for BERT; tested: only the atomic
        adds did, see ``_deterministic_kernels``.)"""
        size = self.config.micro_batch_size
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            examples = list(itertools.islice(iter(dataset), size))
        else:
            examples = [dataset[i] for i in range(min(size, len(dataset)))]
        if not examples:
            return
        acc = self.accelerator
        batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in collator(examples).items()}
        devices = [acc.device] if acc.device.type == "cuda" else []
        start = time.perf_counter()
        with torch.random.fork_rng(devices=devices, device_type=acc.device.type):
            self.model.train()
            out = self.model(**batch)
            sum(loss for loss, _ in out["losses"].values()).backward()
        self.optimizer.zero_grad(set_to_none=True)
        if acc.is_local_main_process:
            logger.info("compiled the task in %.0f s", time.perf_counter() - start)

    # ------------------------------------------------------------------ setup

    def _resolve_resume(self) -> Path | None:
        if not is_hub_resume(self.config.resume):
            key = _resume_key(self.config)
            if key in _RESOLVED:
                return _RESOLVED.pop(key)
            return ckpt.resolve_resume(self.config.resume, self.checkpoint_root, self.config.max_steps)
        with self.accelerator.main_process_first():
            path = resolve_hub_resume(self.config.resume, self.output_dir / ".hub_resume", self.config, self.output_dir)
        if path is not None:
            ckpt.verify_checkpoint(path)
        return path

    def _loader(self, dataset, collator, batch_size: int, train: bool) -> DataLoader:
        """A DataLoader with a generator of its own: starting an iterator (which a resume does at
        another moment than an uninterrupted run) must not draw from the global RNG that dropout uses.

        Workers hold copies of the collator, made when an iterator starts. A collator whose
        randomness follows the epoch (``set_epoch``) therefore gets fresh workers each epoch (and
        each evaluation); others keep theirs (``persistent_workers``). Pinned memory on CUDA.
        """
        iterable = isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__")
        generator = torch.Generator().manual_seed(self.config.seed)
        workers = self.config.num_workers
        options = dict(collate_fn=collator, num_workers=workers, generator=generator,
                       pin_memory=self.accelerator.device.type == "cuda")
        if workers:
            options["persistent_workers"] = not hasattr(collator, "set_epoch")
            if self.config.prefetch_factor:
                options["prefetch_factor"] = self.config.prefetch_factor
        if train and self.batch_sampler is not None:
            return DataLoader(dataset, batch_sampler=self.batch_sampler, **options)
        if train and iterable and is_torchdata_stateful_dataloader_available():
            return self._stream_loader(dataset, batch_size, options)
        return DataLoader(dataset, batch_size=batch_size, shuffle=train and not iterable, drop_last=train, **options)

    def _stream_loader(self, dataset, batch_size: int, options: dict) -> DataLoader:
        """Streamed training data, prepared here: process 0 reads each global batch and hands every
        process its slice (accelerate's dispatching, as for any stream), through torchdata's
        StatefulDataLoader, whose ``state_dict`` holds the stream's own (``datasets``' position). One
        read per global batch keeps that state exact at every step; checkpoints save it, so a resume
        continues the stream instead of re-reading it (O(1) in the step, see ``_micro_batches``)."""
        acc = self.accelerator
        loader = DataLoader(dataset, batch_size=batch_size * acc.num_processes, drop_last=True, **options)
        settings = acc.dataloader_config
        kept = settings.dispatch_batches, settings.split_batches, settings.use_stateful_dataloader
        settings.dispatch_batches = settings.split_batches = settings.use_stateful_dataloader = True
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)  # torchdata 0.11
        try:
            loader = acc.prepare(loader)  # marked prepared: the later prepare() returns it as it is
        finally:
            settings.dispatch_batches, settings.split_batches, settings.use_stateful_dataloader = kept
        # Every process would write accelerate's dl_state_dict.bin to one path; process 0's is the state.
        loader.use_stateful_dataloader = False
        loader.base_dataloader.generator = options["generator"]  # dispatching drops it: iterators would seed
        # from the global RNG that dropout uses
        self._stream_state = True
        return loader

    def _optimizer(self) -> torch.optim.Optimizer:
        if not 0 < self.config.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1] (1 is off), got {self.config.layer_decay}")
        groups = optimizer_groups(
            self.task.named_parameters(), self.task.model.config, self.config.learning_rate, self.config.weight_decay,
            self.config.layer_decay,
        )
        # Fused AdamW (one kernel over all tensors) on CUDA and on CPU. On the 2-core CPU with the default
        # pretrain_mlm model (ModernBERT tiny, 1.4M parameters in 17 tensors; torch 2.13) a step took 7.1 ms
        # as the for-loop default, 3.3 ms with foreach and 0.67 ms fused; after one step the weights were
        # within 6e-8 of the for-loop's.
        fused = self.accelerator.device.type in ("cuda", "cpu") or None
        return torch.optim.AdamW(
            groups,
            lr=self.config.learning_rate,
            betas=(self.config.adam_beta1, self.config.adam_beta2),
            eps=self.config.adam_epsilon,
            fused=fused,
        )

    # ------------------------------------------------------------------ data

    def _micro_batches(self):
        """Endless micro-batches, epoch after epoch, starting where the state says."""
        loader = self.train_loader
        while True:
            loader.set_epoch(self.state.epoch)
            if hasattr(self.train_collator, "set_epoch"):
                self.train_collator.set_epoch(self.state.epoch)
            if hasattr(self.batch_sampler, "set_epoch"):  # accelerate's shard wrapper does not pass it on
                self.batch_sampler.set_epoch(self.state.epoch)
            skip = self.state.batches_in_epoch
            # After a resume that restored the stream's state, the loader continues from there.
            restored, self._stream_resumed = self._stream_resumed, None
            if restored == "epoch_done":
                self.state.epoch += 1
                self.state.batches_in_epoch = 0
                continue
            skipping = bool(skip) and not restored
            batches = self.accelerator.skip_first_batches(loader, skip) if skipping else loader
            # Batches read through a skipping copy leave the loader's state behind: none is saved this epoch.
            self._stream_stale = skipping
            produced = False
            for batch in batches:
                produced = True
                self.state.batches_in_epoch += 1
                yield batch
            if not produced and skip == 0:
                raise ConfigError("the training data gave no batch: it has fewer examples than micro_batch_size")
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    # ------------------------------------------------------------------ loop

    @property
    def unwrapped_task(self) -> Task:
        return self.accelerator.unwrap_model(self.model)

    def fit(self, extra_results: dict | None = None, score_model=None) -> dict:
        """Train to ``max_steps``; return (and save, and push) the results.

        ``extra_results`` (e.g. a baseline) go into all_results.json as they are. ``score_model(model)``
        is called on every process with the final model, before anything is saved or pushed, and
        returns more results (e.g. test-set accuracy); with ``load_best_at_end`` it also scores the last
        model, reported with a ``last_`` prefix.

        Raises :class:`Preempted` after SIGTERM/SIGINT (a checkpoint is saved first),
        :class:`Diverged` after ``max_bad_steps`` non-finite steps in a row, and
        :class:`CheckpointWriteFailed` when a save fails (the previous checkpoint stays intact).
        """
        self.extra_results = dict(extra_results or {})
        self.score_model = score_model
        acc = self.accelerator
        if self.hub is not None and acc.is_main_process:
            self.hub.start()  # a bad token or repo fails here, before anything in output_dir changes
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            # Written last by a finished run: a stale one would make this run look finished if it died.
            (self.output_dir / ckpt.RESULTS_FILE).unlink(missing_ok=True)
        acc.init_trackers("tensorboard", config=_flat_hparams(self.run_config))
        self._write_status("running", None, "training")
        try:
            with _StopSignals() as signals:
                results = self._fit(signals)
        except RunEnded as e:
            self._write_status(STATUS_NAMES.get(type(e), "stopped"), e.exit_code, str(e))
            raise
        except NlpSslError as e:
            self._write_status("bad_input", e.exit_code, str(e))
            raise
        except Exception as e:
            self._write_status("crashed", 1, f"{type(e).__name__}: {e}")
            raise
        finally:
            self._run_settings.close()
            if acc.is_main_process:
                run_lock.release(self.output_dir)
        self._write_status("finished", 0, f"finished at step {self.state.step}")
        return results

    def _write_status(self, status: str, exit_code: int | None, message: str) -> None:
        """``output_dir/run_status.json``: how the run ended, for job scripts whose launcher
        (``accelerate launch``, torchrun) reports every failure as exit code 1."""
        if not self.accelerator.is_main_process:
            return
        try:
            atomic.write_json(self.output_dir / STATUS_FILE, {
                "status": status, "exit_code": exit_code, "step": self.state.step, "message": message,
                "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            })
        except OSError:  # a full disk must not hide the error that is being reported
            logger.warning("could not write %s", self.output_dir / STATUS_FILE)

    def _fit(self, signals: _StopSignals) -> dict:
        acc = self.accelerator
        cfg = self.config
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)
        batches = self._micro_batches()
        task = self.unwrapped_task  # the same module all run: unwrapping costs ~0.5 ms a call
        weights = task.loss_weights
        bar = tqdm(total=cfg.max_steps, initial=self.state.step, disable=not (cfg.progress_bar and acc.is_local_main_process),
                   desc="training", dynamic_ncols=True)
        window_losses: list[torch.Tensor] = []
        window_tokens = 0
        window_start = time.perf_counter()
        run_start = time.perf_counter()
        window_flops = 0.0
        stop = out_of_time = False
        final_eval = None
        budget, time_before = cfg.time_budget_s, self.state.train_time_s

        def clock() -> float:  # training seconds so far, this run's and earlier runs'
            self.state.train_time_s = time_before + time.perf_counter() - run_start
            return self.state.train_time_s

        while self.state.step < cfg.max_steps and not stop and not out_of_time:
            micro = [next(batches) for _ in range(self.accumulation)]
            counts = self._count(micro)
            self.model.train()
            step_loss = torch.zeros((), device=acc.device)
            factor = backends.loss_factor(acc, self.accumulation)  # DeepSpeed divides by its accumulation
            for i, batch in enumerate(micro):
                with backends.micro_step(acc, self.model, last=i == len(micro) - 1):
                    out = self.model(**batch)
                    loss = sum(weights[n] * out["losses"][n][0] / counts[n] for n in weights) * acc.num_processes
                    acc.backward(loss * factor if factor != 1 else loss)
                step_loss += loss.detach() / acc.num_processes
                window_tokens += task.tokens_in(batch)
                window_flops += task.flops(batch)
            # The norm is needed anyway for clipping; with clipping off, max_norm=inf only measures it.
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
            grad_norm = backends.full(grad_norm)  # FSDP2 gives a DTensor
            # The main process's clock decides (its state is the one saved); the others follow.
            bad, stop_requested, out_of_time = self._step_health(
                step_loss, grad_norm, signals, budget is not None and clock() >= budget and acc.is_main_process)
            if bad:
                self._skip_update()
            else:
                self.optimizer.step()
                self.state.bad_steps_in_row = 0
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.step += 1
            last = self.state.step == cfg.max_steps or out_of_time
            if out_of_time and acc.is_local_main_process:
                logger.info("step %d: time_budget %s spent (%.0f s of training): evaluating and saving as at the end",
                            self.state.step, cfg.time_budget, clock())
            if not bad:
                window_losses.append(step_loss)
            bar.update(1)
            if (self.state.step % cfg.log_every == 0 or last) and window_losses:
                elapsed = time.perf_counter() - window_start
                record = self._log_train(window_losses, window_tokens, elapsed, window_flops)
                mfu = {"mfu": f"{record['mfu']:.1%}"} if "mfu" in record else {}
                bar.set_postfix(
                    loss=f"{record['train_loss']:.3f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}", **mfu
                )
                window_losses, window_tokens, window_flops, window_start = [], 0, 0.0, time.perf_counter()
            if self.eval_loader is not None and (self.state.step % cfg.eval_every == 0 or last):
                final_eval = self.evaluate()
                stop = self._track_best(final_eval)
            saved = False
            clock()
            if self.state.step % cfg.save_every == 0 and not last and not stop:
                if self.state.bad_steps_in_row and not stop_requested:
                    # Same weights as before the streak, which now give a non-finite loss: keep the
                    # checkpoints from before it as the newest, for "last good checkpoint" to mean good.
                    logger.warning("step %d: checkpoint skipped during a run of non-finite steps", self.state.step)
                else:
                    self.save_checkpoint()
                    saved = True
            if stop_requested and self.state.step < cfg.max_steps and not stop:
                bar.close()
                self._stop_for_signal(signals.received, saved)
        bar.close()
        runtime = time.perf_counter() - run_start
        clock()
        self._stop_reason = "time_budget" if out_of_time else "early_stopping" if stop else None
        return self._finish(final_eval, runtime)

    def _step_health(self, step_loss: torch.Tensor, grad_norm, signals: _StopSignals,
                     over_budget: bool = False) -> tuple[bool, bool, bool]:
        """(non-finite step, stop requested, time budget spent), agreed by every process in one small
        all-reduce: any process's flag counts for all."""
        acc = self.accelerator
        bad = ~torch.isfinite(step_loss)
        # Under fp16 an infinite gradient is the loss scaler's business: it skips the step and rescales.
        if grad_norm is not None and acc.mixed_precision != "fp16":
            bad = bad | ~torch.isfinite(torch.as_tensor(grad_norm, device=acc.device))
        flags = torch.stack([bad.float(), torch.tensor(float(signals.received is not None), device=acc.device),
                             torch.tensor(float(over_budget), device=acc.device)])
        if acc.num_processes > 1:
            flags = acc.reduce(flags, "sum")
        bad_any, stop_any, spent_any = flags.tolist()
        return bad_any > 0, stop_any > 0, spent_any > 0

    def _skip_update(self) -> None:
        """Drop a non-finite step's gradients, as fp16 loss scaling drops an overflow; stop when it persists."""
        self.state.skipped_steps += 1
        self.state.bad_steps_in_row += 1
        step = self.state.step + 1
        if self.accelerator.is_local_main_process:
            logger.warning("step %d: non-finite loss or gradient norm; update skipped (%d in a row, max_bad_steps=%d)",
                           step, self.state.bad_steps_in_row, self.config.max_bad_steps)
        if self.state.bad_steps_in_row >= self.config.max_bad_steps:
            raise Diverged(
                f"training diverged: steps {step - self.state.bad_steps_in_row + 1}-{step} had a non-finite loss or "
                f"gradient norm (updates skipped, nothing saved from them); {self._last_good()}. "
                "Lower learning_rate or lengthen warmup, then resume from that checkpoint or start again"
            )

    def _last_good(self) -> str:
        newest = ckpt.latest_checkpoint(self.checkpoint_root)
        return f"last good checkpoint: {newest}" if newest else "no checkpoint was saved before"

    def _stop_for_signal(self, received: str | None, saved: bool) -> None:
        """Save (unless this step just did), let pending Hub pushes finish (bounded), then end the run."""
        path = ckpt.checkpoint_dir(self.checkpoint_root, self.state.step)
        if not saved:
            path = self.save_checkpoint()
        if self.hub is not None and self.accelerator.is_main_process:
            try:
                self.hub.wait(timeout=PREEMPT_HUB_WAIT_S)
            except HubError as e:
                logger.warning("%s (the checkpoint is saved locally)", e)
        self.accelerator.end_training()
        raise Preempted(f"{received or 'stop signal'} at step {self.state.step}: "
                        f"checkpoint {path} saved; continue with resume=auto")

    def _count(self, micro: list[dict]) -> dict[str, torch.Tensor]:
        task = self.unwrapped_task
        totals: dict[str, torch.Tensor] = {}
        for batch in micro:
            for name, value in task.count_items(batch).items():
                totals[name] = totals.get(name, 0) + value.to(self.accelerator.device, torch.float32)
        totals = {n: self.accelerator.reduce(v, "sum") for n, v in totals.items()}
        return {n: v.clamp(min=1.0) for n, v in totals.items()}

    def _log_train(self, losses: list[torch.Tensor], tokens: int, elapsed: float, flops: float) -> dict:
        """One train record over the window since the last: loss, lr, tokens/s and MFU (the window's
        model FLOPs, over its time, over the peak of every process)."""
        acc = self.accelerator
        loss = acc.reduce(torch.stack(losses).mean(), "sum").item()
        counts = acc.reduce(torch.tensor([tokens, flops], device=acc.device, dtype=torch.float64), "sum").tolist()
        tokens_all, flops_all = int(counts[0]), counts[1]
        self.state.train_tokens += tokens_all
        record = {
            "step": self.state.step,
            "train_loss": loss,
            "lr": max(self.scheduler.get_last_lr()),  # the head's, with layer_decay
            "tokens_per_s": tokens_all / max(elapsed, 1e-9),
            "epoch": self.state.epoch,
        }
        if self._peak and flops_all:
            record["mfu"] = flops_all / max(elapsed, 1e-9) / (self._peak * acc.num_processes)
        self.state.history.append(record)
        acc.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=self.state.step)
        return record

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss (token-level mean over the whole validation set), perplexity, and the task's metrics."""
        acc = self.accelerator
        self.model.eval()
        sums: dict[str, list[torch.Tensor]] = {}
        for i, batch in enumerate(self.eval_loader):
            if self.config.eval_batches is not None and i >= self.config.eval_batches:
                break
            out = self.model(**batch)
            for kind in ("losses", "metrics"):
                for name, (num, den) in out.get(kind, {}).items():
                    key = f"{kind}/{name}"
                    num, den = num.detach().float(), torch.as_tensor(den, device=acc.device).float()
                    if key in sums:
                        sums[key][0] += num
                        sums[key][1] += den
                    else:
                        sums[key] = [num.clone(), den.clone()]
        keys = sorted(sums)
        if not keys:
            raise ConfigError("the validation data gave no batch")
        packed = torch.stack([torch.stack(sums[k]) for k in keys])
        packed = acc.reduce(packed, "sum")
        values = {k: (packed[i, 0] / packed[i, 1].clamp(min=1)).item() for i, k in enumerate(keys)}
        weights = self.unwrapped_task.loss_weights
        result = {"eval_loss": sum(w * values[f"losses/{n}"] for n, w in weights.items())}
        if len(weights) > 1:
            result.update({f"eval_{n}_loss": values[f"losses/{n}"] for n in weights})
        if self.unwrapped_task.reports_perplexity:
            result["eval_perplexity"] = math.exp(min(result["eval_loss"], 50.0))
        result.update({f"eval_{k.split('/', 1)[1]}": v for k, v in values.items() if k.startswith("metrics/")})
        self.state.history.append({"step": self.state.step, **result})
        acc.log({f"eval/{k[5:]}": v for k, v in result.items()}, step=self.state.step)
        if acc.is_local_main_process:
            logger.info("step %d: %s", self.state.step, ", ".join(f"{k}={v:.4f}" for k, v in result.items()))
        return result

    def _track_best(self, result: dict) -> bool:
        """Keep the best model by ``metric_for_best``; return True when early stopping says stop."""
        key = self.config.metric_for_best
        key = key if key.startswith("eval_") else f"eval_{key}"
        if key not in result:
            raise ConfigError(f"metric_for_best {self.config.metric_for_best!r} is not reported; "
                              f"choose one of {sorted(k[5:] for k in result)}")
        value = result[key]
        best = self.state.best_metric
        self._warn_if_exploding(result)
        better = math.isfinite(value) and (best is None or (value > best if self._greater_is_better else value < best))
        if better:
            self.state.best_metric, self.state.best_step = value, self.state.step
            self.state.evals_without_improvement = 0
            self._save_model(self.output_dir / "best_model", what="best_model")
        else:
            self.state.evals_without_improvement += 1
        patience = self.config.early_stopping_patience
        return bool(patience) and self.state.evals_without_improvement >= patience

    def _warn_if_exploding(self, result: dict) -> None:
        """A loss far above its best usually means the run is diverging: say so while it can be acted on."""
        loss = result.get("eval_loss")
        earlier = [h["eval_loss"] for h in self.state.history[:-1] if math.isfinite(h.get("eval_loss", math.nan))]
        if loss is None or not earlier or not self.accelerator.is_local_main_process:
            return
        best = min(earlier)
        if not math.isfinite(loss) or loss > best + max(1.0, 0.5 * abs(best)):
            logger.warning("step %d: eval_loss %.4g is far above its best (%.4g): the run may be exploding; "
                           "consider a lower learning_rate", self.state.step, loss, best)

    # ------------------------------------------------------------------ saving

    def _check_finite(self, what: str) -> None:
        """Never publish non-finite weights: refuse (and stop) instead."""
        acc = self.accelerator
        params = [backends.local(p).detach() for p in self.model.parameters()]  # FSDP2: this process's shards
        finite = (torch.stack([torch.isfinite(p).all() for p in params]).all().float() if params
                  else torch.ones((), device=acc.device))
        if acc.num_processes > 1:
            finite = acc.reduce(finite.to(acc.device), "min")
        if finite.item() < 1:
            raise Diverged(f"the weights at step {self.state.step} are not finite; {what} not saved; {self._last_good()}")

    @contextlib.contextmanager
    def _writing(self, what: str, partial: Path, intact: str):
        """Turn a failed write (full disk, I/O error) into one line that says what is still safe."""
        try:
            yield
        except CheckpointWriteFailed:
            raise
        except Exception as e:
            reason = ckpt.write_failure(e, partial)
            if reason is None:
                raise
            shutil.rmtree(partial, ignore_errors=True)
            raise CheckpointWriteFailed(
                f"{reason} while saving {what} to {partial.parent} ({intact}); free space, then continue with resume=auto"
            ) from None

    def save_checkpoint(self) -> Path:
        """Accelerate state + trainer state + manifest, written to a temporary folder and renamed when complete."""
        acc = self.accelerator
        self._check_finite(f"checkpoint step {self.state.step}")
        final = ckpt.checkpoint_dir(self.checkpoint_root, self.state.step)
        tmp = ckpt.temporary_dir(final)
        previous = ckpt.latest_checkpoint(self.checkpoint_root)
        intact = f"checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
        with self._writing(f"checkpoint step {self.state.step}", tmp, intact):
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            acc.wait_for_everyone()
            acc.save_state(str(tmp))
            if self._stream_state and not self._stream_stale and acc.is_main_process:
                torch.save({"global_batch": self.train_loader.batch_size, "loader": self.train_loader.state_dict()},
                           tmp / STREAM_STATE_FILE)
            self._save_model(tmp / HF_MODEL_SUBDIR, check=False)  # a plain HF folder inside each checkpoint
            if acc.is_main_process:
                atomic.write_json(tmp / ckpt.STATE_FILE, {**self.state.__dict__, "run_config": self.run_config})
                ckpt.write_manifest(tmp)
                ckpt.publish_checkpoint(tmp, final)
        if acc.is_main_process:
            ckpt.rotate_checkpoints(self.checkpoint_root, self.config.save_total_limit)
            if self.hub is not None:
                self.hub.on_save(final, self.state.step)
        acc.wait_for_everyone()
        return final

    def _load_checkpoint(self, path: Path) -> None:
        try:
            self.accelerator.load_state(str(path))
            saved = json.loads((path / ckpt.STATE_FILE).read_text(encoding="utf-8"))
            self._load_stream_state(path)
        except (OSError, RuntimeError, ValueError, KeyError, EOFError) as e:  # verified, yet it does not fit
            raise CheckpointError(f"checkpoint {path} cannot be loaded into this run: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:300] if str(e) else ''}") from None
        saved.pop("run_config", None)
        self.state = TrainerState(**saved)
        if self.accelerator.is_local_main_process:
            logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.state.step, self.state.epoch,
                        self.state.batches_in_epoch)

    def _load_stream_state(self, path: Path) -> None:
        """Put a streamed loader back where the checkpoint's stream stopped; without that state (an
        older checkpoint, another global batch) ``_micro_batches`` re-reads up to the step instead."""
        if not self._stream_state:
            return
        file = path / STREAM_STATE_FILE
        saved = torch.load(file, weights_only=False) if file.is_file() else None
        if saved is None or saved["global_batch"] != self.train_loader.batch_size:
            why = "has no stream state" if saved is None else f"was saved with global batches of {saved['global_batch']}"
            logger.warning("checkpoint %s %s: re-reading the stream up to the resume point", path, why)
            return
        if saved["loader"].get("_iterator_finished"):  # saved right after the last batch of an epoch
            self._stream_resumed = "epoch_done"
        else:
            self.train_loader.load_state_dict(saved["loader"])
            self._stream_resumed = "continue"

    def _save_model(self, folder: Path, what: str | None = None, check: bool = True) -> None:
        """The HF model (and processor) as a plain folder, written next door and swapped in."""
        acc = self.accelerator
        if check:
            self._check_finite(what or folder.name)
        acc.wait_for_everyone()
        state_dict = acc.get_state_dict(self.model)
        if acc.is_main_process:
            model = self.unwrapped_task.model
            prefix = "model."
            inner = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
            tmp = folder.parent / f".tmp-{folder.name}"
            with self._writing(what or str(folder), tmp,
                               f"the previous {folder.name} is intact" if folder.exists() else "nothing was replaced"):
                shutil.rmtree(tmp, ignore_errors=True)
                model.save_pretrained(tmp, state_dict=inner, safe_serialization=True)
                if self.processor is not None:
                    self.processor.save_pretrained(tmp)
                ckpt.publish_checkpoint(tmp, folder)
        acc.wait_for_everyone()

    def _finish(self, final_eval: dict | None, runtime: float) -> dict:
        acc = self.accelerator
        cfg = self.config
        best_dir = self.output_dir / "best_model"
        scores: dict = {}
        if cfg.load_best_at_end and best_dir.is_dir():
            if self.score_model is not None:  # the last model too, to show what best-checkpointing bought
                scores.update({f"last_{k}": v for k, v in self.score_model(self.unwrapped_task.model).items()})
            self._load_best(best_dir)
            if self.eval_loader is not None:
                final_eval = self.evaluate()
        if self.score_model is not None:
            scores.update(self.score_model(self.unwrapped_task.model))
        train_records = [h for h in self.state.history if "train_loss" in h]
        mfu_records = [h for h in train_records if "mfu" in h]
        results = {
            "steps": self.state.step,
            "train_loss": train_records[-1]["train_loss"] if train_records else None,
            "train_tokens": self.state.train_tokens,
            "train_runtime_s": runtime,
            "train_tokens_per_s": (sum(h["tokens_per_s"] for h in train_records) / len(train_records)) if train_records else None,
            "train_mfu": (sum(h["mfu"] for h in mfu_records) / len(mfu_records)) if mfu_records else None,
            "train_time_s": self.state.train_time_s,  # over resumes too: what time_budget counts
            # What the machine ran: CPU threads of each process, autocast precision, torch.compile.
            "threads_per_process": torch.get_num_threads(),
            "mixed_precision": acc.mixed_precision,
            "compile": cfg.compile,
            **(final_eval or {}),
            **scores,
            **self.extra_results,
        }
        if self.state.skipped_steps:
            results["skipped_steps"] = self.state.skipped_steps
        if self.state.step < cfg.max_steps:
            results["stopped_early"] = True
            results["stop_reason"] = getattr(self, "_stop_reason", None) or "early_stopping"
        if self.state.best_step is not None:
            results["best_step"] = self.state.best_step
            results[f"best_{cfg.metric_for_best}"] = self.state.best_metric
        self._save_final(results)
        acc.end_training()
        if self.hub is not None and acc.is_main_process:
            self.hub.on_end(self.output_dir)
            try:
                self.hub.wait()
            finally:
                self.hub.close()
        return results

    def _load_best(self, best_dir: Path) -> None:
        """Put the best saved weights back into the model (from_pretrained handles tied weights)."""
        model = self.unwrapped_task.model
        best = type(model).from_pretrained(best_dir)
        model.load_state_dict(best.state_dict())

    def _save_final(self, results: dict) -> None:
        """The final model, plots, history and card, then ``all_results.json`` last: its presence
        says that everything else is on disk (``resume=auto`` then knows the run is finished)."""
        acc = self.accelerator
        staging = self.output_dir / ".tmp-final"
        self._save_model(staging, what="the final model")
        if not acc.is_main_process:
            return
        previous = ckpt.latest_checkpoint(self.checkpoint_root)
        intact = f"checkpoint {previous.name} is intact" if previous else "no checkpoint exists"
        with self._writing("the final outputs", staging, intact):
            for item in staging.iterdir():
                target = self.output_dir / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
            staging.rmdir()
            plot = plot_loss_curves(self.state.history, self.output_dir / "loss_curves.png", title=self.description.objective)
            atomic.write_json(self.output_dir / "trainer_history.json", self.state.history, indent=1)
            repo_id = self.hub.repo_id if self.hub is not None else None
            write_model_card(self.output_dir, self.description, results, self.run_config, plot.name if plot else None, repo_id)
            atomic.write_json(self.output_dir / ckpt.RESULTS_FILE, results)
