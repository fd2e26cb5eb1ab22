"""One Accelerate trainer for every objective and modality: the training loop, read top to bottom.

Steps are optimizer steps. A global batch and a per-process micro batch give the gradient accumulation;
the LR schedule is sized in optimizer steps and stepped once per optimizer step, so it is right under
accumulation and with N processes (the transformers ``no_trainer`` examples let Accelerate step it N
times). Losses are normalised by the items in the whole optimizer step, which makes one process and N
processes agree at the same global batch. Every other job of a run has a room in :mod:`nlp_ssl.training`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from nlp_ssl.config import to_dict
from nlp_ssl.errors import Preempted
from nlp_ssl.hub import HubError, HubPusher
from nlp_ssl.tasks.base import Task
from nlp_ssl.training import backends, compiling, evaluation, guard, loaders, optimization, run_lock, saving, setup, throughput
from nlp_ssl.training import checkpointing as ckpt
from nlp_ssl.training.loaders import STREAM_STATE_FILE
from nlp_ssl.training.reporting import RunDescription
from nlp_ssl.training.run_config import TrainConfig, TrainerState, flat_hparams, parse_duration
from nlp_ssl.training.setup import (
    gradient_accumulation_steps,
    make_accelerator,
    resolve_micro_batch_size,
    resolve_mixed_precision,
)
from nlp_ssl.training.throughput import PEAK_FLOPS, measured_peak_flops

__all__ = ["PEAK_FLOPS", "STREAM_STATE_FILE", "TrainConfig", "Trainer", "TrainerState", "gradient_accumulation_steps",
           "make_accelerator", "measured_peak_flops", "parse_duration", "resolve_micro_batch_size", "resolve_mixed_precision"]

logger = logging.getLogger("nlp_ssl.trainer")


class Trainer:
    """Train ``task`` on ``train_dataset`` batched by ``collator``; evaluate, checkpoint, resume, report.

    ``run_config`` is the recipe's whole config (saved with checkpoints and in the model card);
    ``processor`` (a tokenizer or image processor) is saved beside the model. ``batch_sampler``
    (optional) picks the indices of each training micro-batch, e.g. to alternate between datasets
    (:class:`nlp_ssl.data.mixing.AlternatingBatchSampler`); it must yield ``micro_batch_size``
    indices per batch, and its ``set_epoch`` is called each epoch.
    """

    def __init__(self, config: TrainConfig, task: Task, train_dataset, collator, eval_dataset=None, eval_collator=None,
                 processor=None, accelerator: Accelerator | None = None, description: RunDescription | None = None,
                 run_config=None, batch_sampler=None):
        self.config = config
        self.accelerator = acc = accelerator or make_accelerator(config)
        run = setup.take_run_setup(config, acc)  # the lock, the batch arithmetic and a local resume point
        self.output_dir, self.checkpoint_root = Path(config.output_dir), Path(config.output_dir) / "checkpoints"
        self.resume_from = setup.hub_resume_point(config, acc) if setup.is_hub_resume(config.resume) else run.resume_from
        self.accumulation, self.signals = run.accumulation, run.signals
        self.task, self.processor, self.train_collator, self.batch_sampler = task, processor, collator, batch_sampler
        self.description = description or RunDescription()
        self.run_config = to_dict(run_config) if run_config is not None else to_dict(config)
        self.hub = HubPusher(config.hub, self.output_dir) if config.hub.push and acc.is_main_process else None
        self.state = TrainerState()
        self.stream = loaders.StreamPosition(loaders.streams_statefully(train_dataset, batch_sampler))
        self.train_loader = loaders.train_loader(train_dataset, collator, config, acc, batch_sampler)
        self.eval_loader = None if eval_dataset is None else loaders.eval_loader(eval_dataset, eval_collator or collator,
                                                                                 config, acc)
        self.optimizer = optimization.make_optimizer(task, config, acc.device)
        self.scheduler = optimization.make_scheduler(self.optimizer, config)
        if config.impl.compile:
            # In place (nn.Module.compile): state_dict keys stay as they are, so saved folders match an uncompiled run's.
            self.task.compile(dynamic=True)
        self.model, self.optimizer = acc.prepare(self.task, self.optimizer)
        self.train_loader = acc.prepare(self.train_loader)
        if self.eval_loader is not None:
            self.eval_loader = acc.prepare(self.eval_loader)
        acc.register_for_checkpointing(self.scheduler)  # stepped by hand once per optimizer step, saved with the state
        if eval_dataset is not None:  # an unknown metric_for_best fails now, not at the first evaluation
            evaluation.check_metric_for_best(config, acc, self.model, task, eval_dataset, eval_collator or collator)
        self._peak = throughput.peak_flops(config.impl.peak_flops, acc.device, acc.mixed_precision)
        #: Process-wide settings held for the run (until fit returns).
        self._run_settings = contextlib.ExitStack()
        if config.impl.compile:
            # For the whole run: compiled graphs are guarded on it, so leaving it would recompile.
            self._run_settings.enter_context(compiling.deterministic_kernels())
            compiling.compile_on_a_fixed_batch(acc, self.model, self.optimizer, train_dataset, collator,
                                               config.impl.micro_batch_size)

    def fit(self, extra_results: dict | None = None, score_model=None) -> dict:
        """Train to ``max_steps``; return (and save, and push) the results.

        ``extra_results`` (e.g. a baseline) go into all_results.json as they are. ``score_model(model)``
        is called on every process with the final model, before anything is saved or pushed, and
        returns more results (e.g. test-set accuracy); with ``load_best_at_end`` it also scores the last
        model, reported with a ``last_`` prefix. Raises :class:`Preempted` after SIGTERM/SIGINT (a
        checkpoint is saved first), :class:`Diverged` after ``max_bad_steps`` non-finite steps in a row,
        and :class:`CheckpointWriteFailed` when a save fails (the previous checkpoint stays intact).
        """
        self.extra_results, self.score_model = dict(extra_results or {}), score_model
        with self._running() as signals:
            return self._fit(signals)

    def _fit(self, signals: guard.StopSignals) -> dict:
        acc, cfg = self.accelerator, self.config
        if self.resume_from is not None:
            self.state = saving.load_checkpoint(acc, self.resume_from, self.stream, self.train_loader)
        batches = self._micro_batches()
        task = self.unwrapped_task  # the same module all run: unwrapping costs ~0.5 ms a call
        weights = task.loss_weights
        bar = tqdm(total=cfg.train.max_steps, initial=self.state.step, desc="training", dynamic_ncols=True,
                   disable=not (cfg.log.progress_bar and acc.is_local_main_process))
        window = throughput.Window()
        run_start = time.perf_counter()
        stop = out_of_time = False
        final_eval = None
        budget, time_before = cfg.train.time_budget_s, self.state.train_time_s

        def clock() -> float:  # training seconds so far, this run's and earlier runs'
            self.state.train_time_s = time_before + time.perf_counter() - run_start
            return self.state.train_time_s

        while self.state.step < cfg.train.max_steps and not stop and not out_of_time:
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
                window.tokens += task.tokens_in(batch)
                window.flops += task.flops(batch)
            # The norm is needed anyway for clipping; with clipping off, max_norm=inf only measures it.
            clip = cfg.train.max_grad_norm
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
            grad_norm = backends.full(grad_norm)  # FSDP2 gives a DTensor
            # The main process's clock decides (its state is the one saved); the others follow.
            bad, stop_requested, out_of_time = self._step_health(
                step_loss, grad_norm, signals, budget is not None and clock() >= budget and acc.is_main_process)
            if bad:
                guard.count_skipped_step(self.state, cfg.train.max_bad_steps, self.checkpoint_root, acc.is_local_main_process)
            else:
                self.optimizer.step()
                self.state.bad_steps_in_row = 0
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.step += 1
            last = self.state.step == cfg.train.max_steps or out_of_time
            if out_of_time and acc.is_local_main_process:
                logger.info("step %d: time_budget %s spent (%.0f s of training): evaluating and saving as at the end",
                            self.state.step, cfg.train.time_budget, clock())
            if not bad:
                window.losses.append(step_loss)
            bar.update(1)
            if (self.state.step % cfg.log.every == 0 or last) and window.losses:
                bar.set_postfix(**throughput.progress(self._log_train(window)))
                window = throughput.Window()
            if self.eval_loader is not None and (self.state.step % cfg.eval.every == 0 or last):
                final_eval = self.evaluate()
                stop = self._track_best(final_eval)
            saved = False
            clock()
            if self.state.step % cfg.save.every == 0 and not last and not stop:
                if self.state.bad_steps_in_row and not stop_requested:
                    # Same weights as before the streak, which now give a non-finite loss: keep the
                    # checkpoints from before it as the newest, for "last good checkpoint" to mean good.
                    logger.warning("step %d: checkpoint skipped during a run of non-finite steps", self.state.step)
                else:
                    self.save_checkpoint()
                    saved = True
            if stop_requested and self.state.step < cfg.train.max_steps and not stop:
                bar.close()
                self._stop_for_signal(signals.received, saved)
        bar.close()
        runtime = time.perf_counter() - run_start
        clock()
        self._stop_reason = "time_budget" if out_of_time else "early_stopping" if stop else None
        return self._finish(final_eval, runtime)

    # ------------------------------------------------------------------ the loop's parts

    @contextlib.contextmanager
    def _running(self):
        """Around the loop: the Hub checked, a stale results file removed, trackers started,
        ``run_status.json`` kept, stop signals caught; at the end the run's settings undone, the lock released."""
        acc = self.accelerator
        if self.hub is not None and acc.is_main_process:
            self.hub.start()  # a bad token or repo fails here, before anything in output_dir changes
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            # Written last by a finished run: a stale one would make this run look finished if it died.
            (self.output_dir / ckpt.RESULTS_FILE).unlink(missing_ok=True)
        acc.init_trackers("tensorboard", config=flat_hparams(self.run_config))
        with guard.reported(self._write_status, lambda: self.state.step):
            try:
                with self.signals as signals:
                    yield signals
            finally:
                self._run_settings.close()
                if acc.is_main_process:
                    run_lock.release(self.output_dir)

    @property
    def unwrapped_task(self) -> Task:
        return self.accelerator.unwrap_model(self.model)

    def _micro_batches(self):
        """Endless micro-batches, epoch after epoch, starting where the state says."""
        return loaders.micro_batches(self.accelerator, self.train_loader, self.state, self.train_collator,
                                     self.batch_sampler, self.stream)

    def _count(self, micro: list[dict]) -> dict[str, torch.Tensor]:
        """Items of each loss in the whole optimizer step (every micro-batch, every process), before any backward."""
        task = self.unwrapped_task
        totals: dict[str, torch.Tensor] = {}
        for batch in micro:
            for name, value in task.count_items(batch).items():
                totals[name] = totals.get(name, 0) + value.to(self.accelerator.device, torch.float32)
        totals = {n: self.accelerator.reduce(v, "sum") for n, v in totals.items()}
        return {n: v.clamp(min=1.0) for n, v in totals.items()}

    def _step_health(self, step_loss: torch.Tensor, grad_norm, signals: guard.StopSignals,
                     over_budget: bool = False) -> tuple[bool, bool, bool]:
        return guard.step_health(self.accelerator, step_loss, grad_norm, signals.received is not None, over_budget)

    def _log_train(self, window: throughput.Window) -> dict:
        """One train record over the window since the last, in the history and the trackers."""
        record, tokens = throughput.train_record(self.accelerator, window, self._peak, self.state.step,
                                                 max(self.scheduler.get_last_lr()),  # the head's, with layer_decay
                                                 self.state.epoch)
        self.state.train_tokens += tokens
        self.state.history.append(record)
        self.accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=self.state.step)
        return record

    def _stop_for_signal(self, received: str | None, saved: bool) -> None:
        """Save (unless this step just did), let pending Hub pushes finish (bounded), then end the run."""
        path = ckpt.checkpoint_dir(self.checkpoint_root, self.state.step)
        if not saved:
            path = self.save_checkpoint()
        if self.hub is not None and self.accelerator.is_main_process:
            try:
                self.hub.wait(timeout=guard.PREEMPT_HUB_WAIT_S)
            except HubError as e:
                logger.warning("%s (the checkpoint is saved locally)", e)
        self.accelerator.end_training()
        raise Preempted(f"{received or 'stop signal'} at step {self.state.step}: "
                        f"checkpoint {path} saved; continue with resume=auto")

    def _write_status(self, status: str, exit_code: int | None, message: str) -> None:
        if self.accelerator.is_main_process:
            guard.write_status(self.output_dir, status, exit_code, self.state.step, message)

    # ------------------------------------------------------------------ evaluation and the best model

    def evaluate(self) -> dict:
        """Loss (token-level mean over the whole validation set), perplexity, and the task's metrics."""
        result = evaluation.evaluate(self.accelerator, self.model, self.unwrapped_task, self.eval_loader,
                                     self.config.eval.batches, self.state.step)
        self.state.history.append({"step": self.state.step, **result})
        return result

    def _track_best(self, result: dict) -> bool:
        """Keep the best model by ``metric_for_best``; return True when early stopping says stop."""
        cfg = self.config
        better, stop = evaluation.track_best(self.state, result, cfg.eval.metric_for_best, evaluation.greater_is_better(cfg),
                                             cfg.eval.early_stopping_patience)
        if self.accelerator.is_local_main_process:
            evaluation.warn_if_exploding(result, self.state.history, self.state.step)
        if better:
            self._save_model(self.output_dir / "best_model", what="best_model")
        return stop

    # ------------------------------------------------------------------ saving

    def save_checkpoint(self) -> Path:
        """Accelerate state + trainer state + manifest, written to a temporary folder and renamed when complete."""
        acc = self.accelerator
        guard.check_finite(acc, self.model, self.state.step, f"checkpoint step {self.state.step}", self.checkpoint_root)
        final = saving.save_checkpoint(acc, self.model, self.processor, self.state, self.run_config, self.checkpoint_root,
                                       self.stream, self.train_loader, self.config.save.total_limit)
        if self.hub is not None and acc.is_main_process:
            self.hub.on_save(final, self.state.step)
        acc.wait_for_everyone()
        return final

    def _save_model(self, folder: Path, what: str | None = None) -> None:
        """The HF model (and processor) as a plain folder; never with non-finite weights."""
        guard.check_finite(self.accelerator, self.model, self.state.step, what or folder.name, self.checkpoint_root)
        saving.save_model(self.accelerator, self.model, self.processor, folder, what)

    def _load_best(self, best_dir: Path) -> None:
        saving.load_best(self.unwrapped_task.model, best_dir)

    def _finish(self, final_eval: dict | None, runtime: float) -> dict:
        """Score, save and push the final (or best) model; the results."""
        acc, cfg = self.accelerator, self.config
        best_dir = self.output_dir / "best_model"
        scores: dict = {}
        if cfg.eval.load_best_at_end and best_dir.is_dir():
            if self.score_model is not None:  # the last model too, to show what best-checkpointing bought
                scores.update({f"last_{k}": v for k, v in self.score_model(self.unwrapped_task.model).items()})
            self._load_best(best_dir)
            if self.eval_loader is not None:
                final_eval = self.evaluate()
        if self.score_model is not None:
            scores.update(self.score_model(self.unwrapped_task.model))
        results = saving.results(self.state, cfg, acc.mixed_precision, runtime, final_eval, scores, self.extra_results,
                                 getattr(self, "_stop_reason", None))
        guard.check_finite(acc, self.model, self.state.step, "the final model", self.checkpoint_root)
        saving.save_final(acc, self.model, self.processor, self.output_dir, self.checkpoint_root, self.state.history,
                          results, self.description, self.run_config, self.hub.repo_id if self.hub is not None else None)
        acc.end_training()
        if self.hub is not None and acc.is_main_process:
            self.hub.on_end(self.output_dir)
            try:
                self.hub.wait()
            finally:
                self.hub.close()
        return results
