"""Setting a run up, once and before any data is read: the accelerator, the machine, the lock on
``output_dir``, the batch arithmetic and the resume point.

``make_accelerator`` does all of it, so that a recipe's bad input fails before its data is
prepared, and leaves what it resolved on the accelerator (a :class:`RunSetup`), where the
``Trainer`` takes it instead of working it out again.
"""

from __future__ import annotations

import json
import logging
import operator
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import huggingface_hub
import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast_object_list, set_seed

from nlp_ssl.errors import ConfigError
from nlp_ssl.hub import apply_timeout, resolve_hub_resume
from nlp_ssl.training import backends, guard, machine, run_lock
from nlp_ssl.training import checkpointing as ckpt
from nlp_ssl.training.main_first import RunAccelerator
from nlp_ssl.training.run_config import MOVED_TRAIN_KEYS, RESUME_SETTINGS, TrainConfig, check_not_current_directory

logger = logging.getLogger("nlp_ssl.trainer")

#: The attribute of an Accelerator that carries its run's RunSetup from make_accelerator to the Trainer.
_SETUP_ATTRIBUTE = "_nlp_ssl_run_setup"


@dataclass(frozen=True)
class RunSetup:
    """What setting up resolved: the locked ``output_dir``, the batch arithmetic, the resume point and
    the run's stop signals."""

    output_dir: Path
    #: ``resume`` as configured, to tell whether this setup still fits the config that uses it.
    resume: str | None
    micro_batch_size: int
    accumulation: int
    #: A verified local checkpoint to resume from; None for a fresh start or a Hub resume (resolved
    #: by :func:`hub_resume_point` once the data is prepared).
    resume_from: Path | None
    #: SIGTERM and SIGINT from now on: during setup they end the run at once (nothing to lose),
    #: in the training loop they stop it after a checkpoint.
    signals: guard.StopSignals

    def fits(self, config: TrainConfig) -> bool:
        return self.output_dir == Path(config.output_dir).resolve() and self.resume == config.resume


def make_accelerator(config: TrainConfig) -> Accelerator:
    """The run's Accelerator; create it first so data preparation can use ``main_process_first``.

    It also checks and locks ``output_dir`` for this run and checks ``resume`` (a finished run, a
    damaged checkpoint, a changed setting) and the batch sizes, so that those fail before any data is
    prepared, and gives every Hub request of the run (models, datasets, pushes) the ``hub_timeout``.
    It settles ``micro_batch_size: auto`` to a number, and sets up the machine: on CPU each process
    takes its share of the cores (unless the user set OMP_NUM_THREADS), TF32 on Ampere and later
    GPUs, fp32 (said in a warning) where fp16 was asked for on a CPU. From then on SIGTERM and SIGINT
    are the run's (:class:`nlp_ssl.training.guard.StopSignals`).
    """
    apply_timeout(config.hub.timeout)
    if not config.log.progress_bar:
        quiet_progress_bars()
    trackers = [t for t in config.log.report_to if t and t != "none"]
    # `accelerate launch --multi_gpu` on a machine without GPUs: run real DDP over gloo on CPU
    # instead of N independent copies of the run.
    cpu = _launched_distributed() and not torch.cuda.is_available()
    precision = resolve_mixed_precision(config.impl.mixed_precision)
    if precision == "fp16" and (cpu or not torch.accelerator.is_available()):
        # accelerate accepts it and then runs fp32 without a word (fp16 autocast needs a GPU).
        logger.warning("impl.mixed_precision=fp16 needs a GPU: this run trains in fp32 on the CPU (impl.mixed_precision=bf16 "
                       "gives reduced precision on a CPU)")
        precision = "no"
    # Checked before the processes meet, so that a bad batch setting ends every process on every machine
    # at once, before any launcher waits on another.
    gradient_accumulation_steps(config, int(os.environ.get("WORLD_SIZE", "1")))
    accelerator = RunAccelerator(
        prepare_timeout=config.impl.prepare_timeout,
        prepare_on=config.impl.prepare_on,
        cpu=cpu,
        mixed_precision=precision,
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
    """Batch arithmetic, machine, backend, lock, local resume point and stop signals, in that order
    (each but the last can fail)."""
    config.impl.micro_batch_size = resolve_micro_batch_size(config, accelerator.num_processes)
    accumulation = gradient_accumulation_steps(config, accelerator.num_processes)
    threads = set_up_machine(config, accelerator)
    backends.configure(accelerator, config.impl.micro_batch_size, accumulation, config.train.max_grad_norm)
    lock_output_dir(accelerator, config.output_dir, config.write_into_cwd)
    resume_from = None
    if not is_hub_resume(config.resume):
        resume_from = ckpt.resolve_resume(config.resume, Path(config.output_dir) / "checkpoints", config.train.max_steps)
        if resume_from is not None:
            check_resume_settings(config, resume_from)
    output_dir = Path(config.output_dir)
    step = ckpt.checkpoint_step(resume_from) if resume_from is not None else 0
    status_dir = output_dir if accelerator.is_main_process else None
    if status_dir is not None and (output_dir / guard.STATUS_FILE).is_file():
        # An earlier run's status ("preempted") must not outlive this run's setup: if it fails, a
        # requeue loop would start it again and again.
        guard.write_status(output_dir, "running", None, step, "setting up (data, model)")
    signals = guard.StopSignals(status_dir, step).install()
    if accelerator.is_local_main_process:
        log_machine(config, accelerator, accumulation, *threads)
    return RunSetup(output_dir.resolve(), config.resume, config.impl.micro_batch_size, accumulation, resume_from, signals)


def hub_resume_point(config: TrainConfig, accelerator: Accelerator) -> Path | None:
    """``resume=hub`` / ``hf://...``: the checkpoint downloaded (by the main process first) and verified."""
    output_dir = Path(config.output_dir)
    with accelerator.main_process_first():
        path = resolve_hub_resume(config.resume, output_dir / ".hub_resume", config.hub, output_dir)
    if path is not None:
        ckpt.verify_checkpoint(path)
        check_resume_settings(config, path)
    return path


def check_resume_settings(config: TrainConfig, checkpoint: Path) -> None:
    """Refuse to resume a run whose data order or schedule would change (RESUME_SETTINGS), unless the
    user named the setting in ``resume_changed``; a new ``max_steps`` (to extend a run) is said in a warning."""
    try:
        saved = json.loads((checkpoint / ckpt.STATE_FILE).read_text(encoding="utf-8")).get("run_config") or {}
    except (OSError, ValueError):
        return  # verified already; a checkpoint without its run's config has nothing to compare
    now = {key: operator.attrgetter(key)(config) for key in RESUME_SETTINGS}
    then = {key: _saved_setting(saved, key) for key in RESUME_SETTINGS}
    changed = [f"{key} {then[key]!r} → {now[key]!r}" for key in RESUME_SETTINGS
               if then[key] is not _MISSING and key not in config.resume_changed and then[key] != now[key]]
    if changed:
        names = ",".join(c.split()[0] for c in changed)
        raise ConfigError(
            f"resume={config.resume}: {'; '.join(changed)} since checkpoint {checkpoint}, which changes the data order or "
            f"the learning-rate schedule of the run; go back to the checkpoint's values, or pass resume_changed=[{names}] "
            "to resume with the new ones")
    steps = _saved_setting(saved, "train.max_steps")
    if steps not in (_MISSING, config.train.max_steps) and config.optim.lr_schedule != "constant":
        logger.warning("resuming with train.max_steps %d (the checkpoint's run had %d): the %s schedule is now sized to "
                       "%d steps", config.train.max_steps, steps, config.optim.lr_schedule, config.train.max_steps)


_MISSING = object()


def _saved_setting(saved: dict, dotted: str):
    """A setting of a checkpoint's saved run config, by its dotted name, or by its old flat name
    (``MOVED_TRAIN_KEYS``) in a checkpoint of before the config had sections; ``_MISSING`` when it is not there."""
    node = saved
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            old = next((o for o, new in MOVED_TRAIN_KEYS.items() if new == dotted), dotted)
            return saved.get(old, _MISSING)
        node = node[part]
    return node


def set_up_machine(config: TrainConfig, accelerator: Accelerator) -> tuple[int, str, bool]:
    """CPU threads and TF32: the threads each process uses, why, and whether TF32 is on."""
    device = accelerator.device
    threads, why = torch.get_num_threads(), "PyTorch's default"
    if device.type == "cpu":
        threads, why = machine.set_cpu_threads(machine.local_world_size(accelerator.num_processes))
    return threads, why, machine.set_tf32(config.impl.allow_tf32, device)


def log_machine(config: TrainConfig, accelerator: Accelerator, accumulation: int, threads: int, why: str,
                tf32: bool) -> None:
    """One log line with what the run uses; it also says that the run is set up."""
    precision = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}.get(accelerator.mixed_precision,
                                                                                   accelerator.mixed_precision)
    logger.info(
        "%s, %d process(es), %d CPU thread(s) each (%s); precision %s%s (impl.mixed_precision=%s); compile %s; "
        "micro-batch %d × %d accumulation × %d process(es) = %d", accelerator.device, accelerator.num_processes, threads,
        why, precision, " + TF32" if tf32 else "", config.impl.mixed_precision, "on" if config.impl.compile else "off",
        config.impl.micro_batch_size, accumulation, accelerator.num_processes, config.train.global_batch_size,
    )


def resolve_mixed_precision(choice: str) -> str:
    """``auto``: bf16 on CUDA with bf16 and on CPUs with native bf16 (:mod:`nlp_ssl.training.machine`), else ``no``."""
    return machine.auto_mixed_precision() if choice == "auto" else choice


def resolve_micro_batch_size(config: TrainConfig, num_processes: int) -> int:
    """``micro_batch_size``, with ``auto`` as the global batch split evenly over the processes."""
    if config.impl.micro_batch_size != "auto":
        return config.impl.micro_batch_size
    if config.train.global_batch_size % num_processes:
        raise ConfigError(
            f"train.global_batch_size {config.train.global_batch_size} cannot be split evenly over {num_processes} processes "
            f"(impl.micro_batch_size auto): use a multiple of {num_processes}, or set impl.micro_batch_size"
        )
    return config.train.global_batch_size // num_processes


def gradient_accumulation_steps(config: TrainConfig, num_processes: int) -> int:
    per_step = resolve_micro_batch_size(config, num_processes) * num_processes
    if config.train.global_batch_size % per_step:
        raise ConfigError(
            f"train.global_batch_size {config.train.global_batch_size} is not a multiple of impl.micro_batch_size "
            f"{config.impl.micro_batch_size} × {num_processes} process(es)"
        )
    return config.train.global_batch_size // per_step


def lock_output_dir(accelerator: Accelerator, output_dir: str, write_into_cwd: bool = False) -> None:
    """The main process checks and locks ``output_dir``; every process raises the same one-line error if it can't."""
    error = None
    if accelerator.is_main_process:
        try:
            check_output_dir(output_dir, write_into_cwd)
            run_lock.acquire(output_dir)
        except ConfigError as e:
            error = str(e)
    if accelerator.num_processes > 1:
        shared = [error]
        broadcast_object_list(shared, from_process=0)
        error = shared[0]
    if error is not None:
        raise ConfigError(error)


#: What an nlp_ssl run leaves in its output_dir: a folder holding one of them is a run's to continue.
RUN_MARKERS = (run_lock.LOCK_FILE, guard.STATUS_FILE, "checkpoints", ckpt.RESULTS_FILE)


def check_output_dir(output_dir: str, write_into_cwd: bool) -> None:
    """A folder the run may write into: not a file or under one, not the current directory unless
    ``write_into_cwd`` says so, and new, empty or an nlp_ssl run's, so that nothing the run writes
    (README.md, config.json, model files) replaces a file it did not create."""
    path = Path(output_dir).absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output_dir {output_dir} is a file, not a folder; choose another output_dir")
    above = next(p for p in path.parents if p.exists())
    if not above.is_dir():
        raise ConfigError(f"output_dir {output_dir} is under {above}, which is a file, not a folder")
    check_not_current_directory(output_dir, write_into_cwd)
    names = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if names and not any(name in RUN_MARKERS for name in names):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise ConfigError(f"output_dir {output_dir} holds files of something else ({shown}), which a run's README.md, "
                          "config.json and model files could replace: choose a new or empty folder")


def quiet_progress_bars() -> None:
    """``progress_bar=false``: no bar at all, the data's, the Hub's and saving's included."""
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def is_hub_resume(resume: str | None) -> bool:
    return resume == "hub" or (resume or "").startswith("hf://")


def _launched_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
