"""Setting a run up, once and before any data is read: the accelerator, the machine, the lock on
``output_dir``, the batch arithmetic and the resume point.

``make_accelerator`` does all of it, so that a recipe's bad input fails before its data is
prepared, and leaves what it resolved on the accelerator (a :class:`RunSetup`), where the
``Trainer`` takes it instead of working it out again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast_object_list, set_seed

from nlp_ssl import backends, machine, run_lock
from nlp_ssl import checkpointing as ckpt
from nlp_ssl.errors import ConfigError
from nlp_ssl.hub import apply_timeout, resolve_hub_resume
from nlp_ssl.training.config import TrainConfig

logger = logging.getLogger("nlp_ssl.trainer")

#: The attribute of an Accelerator that carries its run's RunSetup from make_accelerator to the Trainer.
_SETUP_ATTRIBUTE = "_nlp_ssl_run_setup"


@dataclass(frozen=True)
class RunSetup:
    """What setting up resolved: the locked ``output_dir``, the batch arithmetic and the resume point."""

    output_dir: Path
    #: ``resume`` as configured, to tell whether this setup still fits the config that uses it.
    resume: str | None
    micro_batch_size: int
    accumulation: int
    #: A verified local checkpoint to resume from; None for a fresh start or a Hub resume (resolved
    #: by :func:`hub_resume_point` once the data is prepared).
    resume_from: Path | None

    def fits(self, config: TrainConfig) -> bool:
        return self.output_dir == Path(config.output_dir).resolve() and self.resume == config.resume


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
    setattr(accelerator, _SETUP_ATTRIBUTE, set_up_run(config, accelerator))
    set_seed(config.seed)
    return accelerator


def take_run_setup(config: TrainConfig, accelerator: Accelerator) -> RunSetup:
    """The setup that ``make_accelerator`` left for this config (taken once), or one made now for an
    accelerator made elsewhere."""
    setup = accelerator.__dict__.pop(_SETUP_ATTRIBUTE, None)
    return setup if setup is not None and setup.fits(config) else set_up_run(config, accelerator)


def set_up_run(config: TrainConfig, accelerator: Accelerator) -> RunSetup:
    """Batch arithmetic, machine, backend, lock and local resume point, in that order (each can fail)."""
    config.micro_batch_size = resolve_micro_batch_size(config, accelerator.num_processes)
    accumulation = gradient_accumulation_steps(config, accelerator.num_processes)
    set_up_machine(config, accelerator, accumulation)
    backends.configure(accelerator, config.micro_batch_size, accumulation, config.max_grad_norm)
    lock_output_dir(accelerator, config.output_dir)
    resume_from = None
    if not is_hub_resume(config.resume):
        resume_from = ckpt.resolve_resume(config.resume, Path(config.output_dir) / "checkpoints", config.max_steps)
    return RunSetup(Path(config.output_dir).resolve(), config.resume, config.micro_batch_size, accumulation, resume_from)


def hub_resume_point(config: TrainConfig, accelerator: Accelerator) -> Path | None:
    """``resume=hub`` / ``hf://...``: the checkpoint downloaded (by the main process first) and verified."""
    output_dir = Path(config.output_dir)
    with accelerator.main_process_first():
        path = resolve_hub_resume(config.resume, output_dir / ".hub_resume", config, output_dir)
    if path is not None:
        ckpt.verify_checkpoint(path)
    return path


def set_up_machine(config: TrainConfig, accelerator: Accelerator, accumulation: int) -> None:
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


def resolve_mixed_precision(choice: str) -> str:
    """``auto``: bf16 on CUDA with bf16 and on CPUs with native bf16 (:mod:`nlp_ssl.machine`), else ``no``."""
    return machine.auto_mixed_precision() if choice == "auto" else choice


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


def is_hub_resume(resume: str | None) -> bool:
    return resume == "hub" or (resume or "").startswith("hf://")


def _launched_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
