"""What a run writes: checkpoints (resumable state), plain Hugging Face model folders, and the final
outputs, each written next door and swapped in, so that a crash or a full disk never leaves a
half-written folder under a real name (:mod:`nlp_ssl.training.checkpointing` verifies and rotates them)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
import transformers

from nlp_ssl import atomic
from nlp_ssl.errors import CheckpointError, CheckpointWriteFailed
from nlp_ssl.hub import HF_MODEL_SUBDIR
from nlp_ssl.training import checkpointing as ckpt
from nlp_ssl.training.loaders import StreamPosition
from nlp_ssl.training.reporting import plot_loss_curves, write_model_card
from nlp_ssl.training.run_config import TrainerState
from nlp_ssl.training.throughput import averages

logger = logging.getLogger("nlp_ssl.trainer")


@contextlib.contextmanager
def quietly(level: int = logging.ERROR):
    """Without accelerate's line per saved or loaded file (and its warning that tied weights are saved
    once) and transformers' shard bar: a checkpoint is one line of the run's log, not nine."""
    accelerate_log = logging.getLogger("accelerate")
    was, bars = accelerate_log.level, transformers.utils.logging.is_progress_bar_enabled()
    accelerate_log.setLevel(level)
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        accelerate_log.setLevel(was)
        if bars:
            transformers.utils.logging.enable_progress_bar()


@contextlib.contextmanager
def writing(what: str, partial: Path, intact: str):
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


def save_checkpoint(accelerator, model, processor, state: TrainerState, run_config: dict, root: Path,
                    stream: StreamPosition, train_loader, keep: int) -> Path:
    """Accelerate state + trainer state + a plain HF model + manifest, written to a temporary folder
    and renamed when complete; then the oldest beyond ``keep`` are rotated out."""
    acc = accelerator
    final = ckpt.checkpoint_dir(root, state.step)
    tmp = ckpt.temporary_dir(final)
    previous = ckpt.latest_checkpoint(root)
    intact = f"checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
    with writing(f"checkpoint step {state.step}", tmp, intact), quietly():
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if acc.is_main_process:
            stream.save(train_loader, tmp)
        save_model(acc, model, processor, tmp / HF_MODEL_SUBDIR)  # a plain HF folder inside each checkpoint
        if acc.is_main_process:
            atomic.write_json(tmp / ckpt.STATE_FILE, {**state.__dict__, "run_config": run_config})
            ckpt.write_manifest(tmp)
            ckpt.publish_checkpoint(tmp, final)
    if acc.is_main_process:
        ckpt.rotate_checkpoints(root, keep)
    return final


def load_checkpoint(accelerator, path: Path, stream: StreamPosition, train_loader) -> TrainerState:
    """Model, optimizer, scheduler, RNG and stream position from a verified checkpoint; its trainer state."""
    try:
        with quietly(logging.WARNING):
            accelerator.load_state(str(path))
        saved = json.loads((path / ckpt.STATE_FILE).read_text(encoding="utf-8"))
        stream.restore(train_loader, path)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError) as e:  # verified, yet it does not fit
        raise CheckpointError(f"checkpoint {path} cannot be loaded into this run: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300] if str(e) else ''}") from None
    saved.pop("run_config", None)
    state = TrainerState(**saved)
    if accelerator.is_local_main_process:
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, state.step, state.epoch,
                    state.batches_in_epoch)
    return state


def save_model(accelerator, model, processor, folder: Path, what: str | None = None) -> None:
    """The HF model inside the task (and the processor) as a plain folder, written next door and swapped in."""
    acc = accelerator
    acc.wait_for_everyone()
    state_dict = acc.get_state_dict(model)
    if acc.is_main_process:
        hf_model = acc.unwrap_model(model).model
        prefix = "model."
        inner = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        tmp = folder.parent / f".tmp-{folder.name}"
        with writing(what or str(folder), tmp,
                     f"the previous {folder.name} is intact" if folder.exists() else "nothing was replaced"), quietly():
            shutil.rmtree(tmp, ignore_errors=True)
            hf_model.save_pretrained(tmp, state_dict=inner, safe_serialization=True)
            if processor is not None:
                processor.save_pretrained(tmp)
            ckpt.publish_checkpoint(tmp, folder)
    acc.wait_for_everyone()


def load_best(model, best_dir: Path) -> None:
    """Put the best saved weights back into the HF model (from_pretrained handles tied weights)."""
    with quietly():
        best = type(model).from_pretrained(best_dir)
    model.load_state_dict(best.state_dict())


def results(state: TrainerState, config, mixed_precision: str, runtime: float, final_eval: dict | None,
            scores: dict, extra: dict, stop_reason: str | None) -> dict:
    """What ``all_results.json`` says about the run."""
    train = [h for h in state.history if "train_loss" in h]
    out = {
        "steps": state.step,
        "train_loss": train[-1]["train_loss"] if train else None,
        "train_tokens": state.train_tokens,
        "train_runtime_s": runtime,
        **averages(state.history),
        "train_time_s": state.train_time_s,  # over resumes too: what time_budget counts
        # What the machine ran: CPU threads of each process, autocast precision, torch.compile.
        "threads_per_process": torch.get_num_threads(),
        "mixed_precision": mixed_precision,
        "compile": config.impl.compile,
        **(final_eval or {}),
        **scores,
        **extra,
    }
    if state.skipped_steps:
        out["skipped_steps"] = state.skipped_steps
    if state.step < config.train.max_steps:
        out["stopped_early"] = True
        out["stop_reason"] = stop_reason or "early_stopping"
    if state.best_step is not None:
        out["best_step"] = state.best_step
        out[f"best_{config.eval.metric_for_best}"] = state.best_metric
    return out


def save_final(accelerator, model, processor, output_dir: Path, checkpoint_root: Path, history: list[dict],
               results: dict, description, run_config: dict, repo_id: str | None) -> None:
    """The final model, plots, history and card, then ``all_results.json`` last: its presence
    says that everything else is on disk (``resume=auto`` then knows the run is finished)."""
    staging = output_dir / ".tmp-final"
    save_model(accelerator, model, processor, staging, what="the final model")
    if not accelerator.is_main_process:
        return
    previous = ckpt.latest_checkpoint(checkpoint_root)
    intact = f"checkpoint {previous.name} is intact" if previous else "no checkpoint exists"
    with writing("the final outputs", staging, intact):
        for item in staging.iterdir():
            target = output_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        staging.rmdir()
        plot = plot_loss_curves(history, output_dir / "loss_curves.png", title=description.objective)
        atomic.write_json(output_dir / "trainer_history.json", history, indent=1)
        write_model_card(output_dir, description, results, run_config, plot.name if plot else None, repo_id)
        atomic.write_json(output_dir / ckpt.RESULTS_FILE, results)
