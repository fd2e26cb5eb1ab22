"""What a run is told (``TrainConfig``, every recipe's top-level keys) and what it keeps as it goes
(``TrainerState``, saved in every checkpoint)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from accelerate.utils import LoggerType

from nlp_ssl.config import check_ranges
from nlp_ssl.errors import ConfigError
from nlp_ssl.hub import HubConfig

#: Settings that a resume must find as the checkpoint's run had them: each changes the order of the
#: data or the learning-rate schedule (``resume_changed`` lets named ones differ).
RESUME_SETTINGS = ("seed", "train.global_batch_size", "impl.micro_batch_size", "optim.lr_schedule",
                   "optim.warmup_steps", "optim.warmup_ratio")

#: ``log.report_to`` values: accelerate's trackers, or none.
TRACKERS = tuple(sorted(t.value for t in LoggerType if t.value != "all")) + ("all", "none")


@dataclass
class TrainSteps:
    """What is learned, how long: steps, examples per step, clipping."""

    max_steps: int = 1000
    #: Examples per optimizer step, over all processes and accumulation.
    global_batch_size: int = 32
    #: Stop after this much wall-clock training (seconds, or a number with s, m or h: ``30m``, ``2h``),
    #: summed over resumes; the run then evaluates and saves as at max_steps. None: no budget.
    time_budget: str | None = None
    max_grad_norm: float = 1.0
    #: Stop (exit 3) after this many optimizer steps in a row with a non-finite loss or gradient
    #: norm; each such step is skipped, as fp16 loss scaling skips an overflow.
    max_bad_steps: int = 10

    def __post_init__(self):
        if self.time_budget is not None:
            self.time_budget = str(self.time_budget)
            parse_duration(self.time_budget)
        check_ranges(self, max_steps="(0, inf)", global_batch_size="(0, inf)", max_grad_norm="[0, inf)",
                     max_bad_steps="(0, inf)")

    @property
    def time_budget_s(self) -> float | None:
        return None if self.time_budget is None else parse_duration(self.time_budget)


@dataclass
class OptimConfig:
    """What is learned, how fast: AdamW and its learning-rate schedule."""

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

    def __post_init__(self):
        check_ranges(self, learning_rate="(0, inf)", weight_decay="[0, inf)", layer_decay="(0, 1]", adam_beta1="[0, 1)",
                     adam_beta2="[0, 1)", adam_epsilon="(0, inf)", warmup_steps="[0, inf)", warmup_ratio="[0, 1)")


@dataclass
class ImplConfig:
    """How it runs (the numbers do not change with these, up to floating point): micro batches, precision,
    compilation, data loading and who prepares it."""

    #: Examples per forward pass on one process. ``auto``: global_batch_size / processes, one forward
    #: pass per optimizer step; a number caps it and the rest is accumulated. ``make_accelerator``
    #: replaces ``auto`` by the number it stands for, so code after it reads an int.
    micro_batch_size: int | str = "auto"
    #: ``auto``: bf16 where the hardware has it, else full precision.
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    #: torch.compile the task (model and loss); saved folders and checkpoints are the same as without.
    compile: bool = False
    #: TF32 matmuls and convolutions on CUDA GPUs of compute capability 8.0 and later; ignored elsewhere.
    allow_tf32: bool = True
    num_workers: int = 0
    #: Batches each DataLoader worker prepares ahead (only with num_workers > 0; None: PyTorch's 2).
    prefetch_factor: int | None = None
    #: Hardware peak FLOP/s for MFU (None: looked up for known GPUs, else measured by a short matmul probe).
    peak_flops: float | None = None
    #: Seconds the other processes wait while the data is prepared (tokenized, packed, downloaded) by
    #: the process that goes first; past it every process stops with one line naming this setting.
    prepare_timeout: float = 3600.0
    #: Who prepares the data first: ``main`` (the run's main process; the disk is shared by the
    #: machines) or ``each_machine`` (each machine's first process, for its own disk).
    prepare_on: Literal["main", "each_machine"] = "main"

    def __post_init__(self):
        check_ranges(self, prepare_timeout="(0, inf)")
        if isinstance(self.micro_batch_size, float) and self.micro_batch_size.is_integer():
            self.micro_batch_size = int(self.micro_batch_size)
        if self.micro_batch_size != "auto":
            if not isinstance(self.micro_batch_size, int) or isinstance(self.micro_batch_size, bool):
                raise ConfigError(f"micro_batch_size must be an integer or auto, got {self.micro_batch_size!r}")
            check_ranges(self, micro_batch_size="(0, inf)")
        check_ranges(self, num_workers="[0, inf)", prefetch_factor="(0, inf)", peak_flops="(0, inf)")


@dataclass
class EvalConfig:
    """When it evaluates, on how much, and which model it keeps."""

    every: int = 200
    #: Examples per evaluation batch on one process (None: impl.micro_batch_size).
    batch_size: int | None = None
    #: Cap on evaluation batches per process (None: the whole validation set).
    batches: int | None = None
    metric_for_best: str = "loss"
    #: None: lower is better for loss and perplexity, higher for anything else.
    greater_is_better: bool | None = None
    #: Stop after this many evaluations without improvement (0: never).
    early_stopping_patience: int = 0
    #: Leave the best model (by metric_for_best), not the last one, in output_dir.
    load_best_at_end: bool = False

    def __post_init__(self):
        check_ranges(self, every="(0, inf)", batch_size="(0, inf)", batches="(0, inf)", early_stopping_patience="[0, inf)")


@dataclass
class SaveConfig:
    """When it saves a checkpoint, and how many it keeps."""

    every: int = 500
    #: Checkpoints kept under output_dir/checkpoints (the best model is kept apart).
    total_limit: int = 2

    def __post_init__(self):
        check_ranges(self, every="(0, inf)", total_limit="[0, inf)")


@dataclass
class LogConfig:
    """What it reports while it runs."""

    every: int = 10
    #: Trackers (accelerate's: tensorboard, wandb, mlflow ...); [] or [none] for none.
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    progress_bar: bool = True

    def __post_init__(self):
        check_ranges(self, every="(0, inf)")
        unknown = [t for t in self.report_to if t and t not in TRACKERS]
        if unknown:
            raise ConfigError(f"report_to: unknown tracker {unknown[0]!r}; choose from {', '.join(TRACKERS)} "
                              "(or log.report_to=[] for none)")


#: The flat keys of before the sections, and where each lives now.
_FLAT_KEYS = {
    "train": ("max_steps", "global_batch_size", "time_budget", "max_grad_norm", "max_bad_steps"),
    "optim": ("learning_rate", "weight_decay", "layer_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "lr_schedule",
              "warmup_steps", "warmup_ratio"),
    "impl": ("micro_batch_size", "mixed_precision", "compile", "allow_tf32", "num_workers", "prefetch_factor", "peak_flops"),
    "eval": ("metric_for_best", "greater_is_better", "early_stopping_patience", "load_best_at_end"),
}
MOVED_TRAIN_KEYS = {
    **{old: f"{section}.{old}" for section, olds in _FLAT_KEYS.items() for old in olds},
    "eval_every": "eval.every", "eval_batch_size": "eval.batch_size", "eval_batches": "eval.batches",
    "save_every": "save.every", "save_total_limit": "save.total_limit",
    "log_every": "log.every", "report_to": "log.report_to", "progress_bar": "log.progress_bar",
    "push_to_hub": "hub.push", "hub_model_id": "hub.model_id", "hub_private": "hub.private", "hub_revision": "hub.revision",
    "hub_strategy": "hub.strategy", "hub_timeout": "hub.timeout", "hub_retries": "hub.retries",
    "prepare_timeout": "impl.prepare_timeout", "prepare_on": "impl.prepare_on",
}


@dataclass
class TrainConfig:
    """Every recipe's run settings: the run itself at the top, then what is learned (``train``,
    ``optim``), how it runs (``impl``), when it evaluates, saves and logs, and the Hub. A recipe adds
    what its model and data are (``model``, ``data`` ...) beside them."""

    MOVED_KEYS = MOVED_TRAIN_KEYS
    #: The run keeps ``run_status.json`` in ``output_dir`` (a harness of several runs, as GLUE, does not).
    STATUS_IN_OUTPUT_DIR = True
    #: A new or empty folder, or one of an earlier nlp_ssl run (to continue it); never the current
    #: directory unless ``write_into_cwd`` says so.
    output_dir: str = "outputs/run"
    #: Let ``output_dir`` be the current directory (it must still be empty or hold an nlp_ssl run).
    write_into_cwd: bool = False
    seed: int = 42
    #: ``auto`` (latest checkpoint in output_dir, or a fresh start), a checkpoint path, ``hub`` or
    #: ``hf://user/name``, or empty.
    resume: str | None = None
    #: Settings of RESUME_SETTINGS that may differ from the checkpoint's run (e.g. ``[train.global_batch_size]``):
    #: a resume that finds another value is refused unless the setting is named here.
    resume_changed: list[str] = field(default_factory=list)
    train: TrainSteps = field(default_factory=TrainSteps)
    optim: OptimConfig = field(default_factory=OptimConfig)
    impl: ImplConfig = field(default_factory=ImplConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    save: SaveConfig = field(default_factory=SaveConfig)
    log: LogConfig = field(default_factory=LogConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    def __post_init__(self):
        check_ranges(self, seed="[0, 4294967295]")
        check_output_dir_named(self.output_dir)
        if self.optim.warmup_steps and self.optim.warmup_steps >= self.train.max_steps:
            raise ConfigError(f"optim.warmup_steps {self.optim.warmup_steps} is not below train.max_steps "
                              f"{self.train.max_steps}: the learning rate would never leave its warmup; lower "
                              "optim.warmup_steps (or use optim.warmup_ratio)")
        self.resume_changed = [MOVED_TRAIN_KEYS.get(s, s) for s in self.resume_changed]
        unknown = [s for s in self.resume_changed if s not in RESUME_SETTINGS]
        if unknown:
            raise ConfigError(f"resume_changed: {unknown[0]!r} is not one of the settings a resume checks "
                              f"({', '.join(RESUME_SETTINGS)})")


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


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """A nested config as flat ``section.key`` scalars, as trackers take hyperparameters."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        elif value is not None:
            out[name] = str(value)
    return out


def check_output_dir_named(output_dir: str) -> None:
    """An empty ``output_dir`` (an unset ``$OUT``) would write into the current directory."""
    if not str(output_dir).strip():
        raise ConfigError("output_dir is empty (an unset variable in a job script?): name the folder the run writes to")


def check_not_current_directory(output_dir: str, write_into_cwd: bool) -> None:
    """The current directory is no ``output_dir`` unless ``write_into_cwd`` says so."""
    if Path(output_dir).resolve() == Path.cwd().resolve() and not write_into_cwd:
        raise ConfigError(f"output_dir {output_dir} is the current directory, where the run's files would mix with "
                          "yours: choose a subfolder, or pass write_into_cwd=true if you mean it")
