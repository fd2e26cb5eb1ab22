"""What keeps a run safe: stop signals, non-finite steps and weights, and ``run_status.json``.

SIGTERM and SIGINT ask the run to stop after the current optimizer step, with a checkpoint. A step
whose loss or gradient norm is not finite is skipped, as fp16 loss scaling skips an overflow;
``max_bad_steps`` of them in a row stop the run (:class:`Diverged`), and non-finite weights are never
saved. The ranks agree on "bad step", "stop" and "time budget spent" in one all-reduce per step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from nlp_ssl import atomic
from nlp_ssl.errors import (
    EXIT_INTERRUPTED,
    EXIT_PREEMPTED,
    CheckpointWriteFailed,
    Diverged,
    NlpSslError,
    Preempted,
    PreemptedBeforeTraining,
    RunEnded,
)
from nlp_ssl.training import backends
from nlp_ssl.training import checkpointing as ckpt

logger = logging.getLogger("nlp_ssl.trainer")

#: How the run ended: ``running``, ``finished``, ``preempted``, ``diverged``, ``write_failed``,
#: ``bad_input`` (exit 2), ``interrupted`` (Ctrl-C, exit 130) or ``crashed`` (exit 1, a bug).
STATUS_FILE = "run_status.json"
STATUS_NAMES = {Preempted: "preempted", Diverged: "diverged", CheckpointWriteFailed: "write_failed"}

#: Seconds a stopping run waits for Hub uploads in flight: schedulers allow ~30 s after SIGTERM.
PREEMPT_HUB_WAIT_S = 20.0


class StopSignals:
    """SIGTERM and SIGINT, from the moment the run is set up (the lock taken) to the end of ``fit``.

    During setup (data, model, compile) a run has nothing to lose: SIGTERM ends it at once as
    preempted (:class:`PreemptedBeforeTraining`, exit 75) and SIGINT as a KeyboardInterrupt, each
    with ``run_status.json`` saying so, for a requeue loop. In the training loop (``with signals:``)
    they ask the run to stop after the current optimizer step, with a checkpoint; a second SIGINT
    aborts at once without saving. Handlers can only be installed from the main thread (signals reach
    no other); elsewhere nothing is installed.
    """

    def __init__(self, status_dir: Path | None = None, step: int = 0):
        self.received: str | None = None
        self.training = False
        #: Where ``run_status.json`` goes (the main process's output_dir; None: write none), and at which step.
        self._status_dir, self._step = status_dir, step
        self._previous = {}

    def install(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread() and not self._previous:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous = signal.getsignal(sig)
                earlier = getattr(previous, "__self__", None)
                if isinstance(earlier, StopSignals):  # a run set up earlier in this process that never trained
                    previous = earlier._previous.get(sig, previous)
                self._previous[sig] = previous
                signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self):
        self.training = True
        return self.install()

    def __exit__(self, *exc):
        self.training = False
        self.uninstall()

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if not self.training:
            if signum == signal.SIGINT:
                self._record("interrupted", EXIT_INTERRUPTED, "SIGINT before training started; nothing was saved")
                raise KeyboardInterrupt
            message = f"{name} before training started: nothing was lost; continue with resume=auto"
            self._record("preempted", EXIT_PREEMPTED, message)
            raise PreemptedBeforeTraining(message)
        if self.received is not None and signum == signal.SIGINT:
            print("second SIGINT: aborting without saving", file=sys.stderr, flush=True)
            self._record("interrupted", EXIT_INTERRUPTED, "second SIGINT: aborted without saving")
            os._exit(EXIT_INTERRUPTED)
        if self.received is None:
            self.received = name
            logger.warning("received %s: finishing this optimizer step, then saving a checkpoint and stopping", name)

    def _record(self, status: str, exit_code: int, message: str) -> None:
        if self._status_dir is not None:
            write_status(self._status_dir, status, exit_code, self._step, message)


def write_status(output_dir: Path, status: str, exit_code: int | None, step: int, message: str) -> None:
    """``output_dir/run_status.json``: how the run ended, for job scripts whose launcher
    (``accelerate launch``, torchrun) reports every failure as exit code 1. Main process only."""
    try:
        atomic.write_json(output_dir / STATUS_FILE, {
            "status": status, "exit_code": exit_code, "step": step, "message": message,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        })
    except OSError:  # a full disk must not hide the error that is being reported
        logger.warning("could not write %s", output_dir / STATUS_FILE)


@contextlib.contextmanager
def reported(write: Callable[[str, int | None, str], None], step: Callable[[], int]):
    """``running`` while the block runs, then how it ended: finished, or the status of its exception."""
    write("running", None, "training")
    try:
        yield
    except RunEnded as e:
        write(STATUS_NAMES.get(type(e), "stopped"), e.exit_code, str(e))
        raise
    except NlpSslError as e:
        write("bad_input", e.exit_code, str(e))
        raise
    except Exception as e:
        write("crashed", 1, f"{type(e).__name__}: {e}")
        raise
    write("finished", 0, f"finished at step {step()}")


def step_health(accelerator, step_loss: torch.Tensor, grad_norm, stop_requested: bool,
                over_budget: bool = False) -> tuple[bool, bool, bool]:
    """(non-finite step, stop requested, time budget spent), agreed by every process in one small
    all-reduce: any process's flag counts for all."""
    acc = accelerator
    bad = ~torch.isfinite(step_loss)
    # Under fp16 an infinite gradient is the loss scaler's business: it skips the step and rescales.
    if grad_norm is not None and acc.mixed_precision != "fp16":
        bad = bad | ~torch.isfinite(torch.as_tensor(grad_norm, device=acc.device))
    flags = torch.stack([bad.float(), torch.tensor(float(stop_requested), device=acc.device),
                         torch.tensor(float(over_budget), device=acc.device)])
    if acc.num_processes > 1:
        flags = acc.reduce(flags, "sum")
    bad_any, stop_any, spent_any = flags.tolist()
    return bad_any > 0, stop_any > 0, spent_any > 0


def count_skipped_step(state, max_bad_steps: int, checkpoint_root: Path, verbose: bool) -> None:
    """A non-finite step's update is dropped, as fp16 loss scaling drops an overflow; stop when it persists."""
    state.skipped_steps += 1
    state.bad_steps_in_row += 1
    step = state.step + 1
    if verbose:
        logger.warning("step %d: non-finite loss or gradient norm; update skipped (%d in a row, train.max_bad_steps=%d)",
                       step, state.bad_steps_in_row, max_bad_steps)
    if state.bad_steps_in_row >= max_bad_steps:
        raise Diverged(
            f"training diverged: steps {step - state.bad_steps_in_row + 1}-{step} had a non-finite loss or "
            f"gradient norm (updates skipped, nothing saved from them); {last_good(checkpoint_root)}. "
            "Lower optim.learning_rate or lengthen optim.warmup_steps, then resume from that checkpoint or start again"
        )


def check_finite(accelerator, model, step: int, what: str, checkpoint_root: Path) -> None:
    """Never publish non-finite weights: refuse (and stop) instead."""
    acc = accelerator
    params = [backends.local(p).detach() for p in model.parameters()]  # FSDP2: this process's shards
    finite = (torch.stack([torch.isfinite(p).all() for p in params]).all().float() if params
              else torch.ones((), device=acc.device))
    if acc.num_processes > 1:
        finite = acc.reduce(finite.to(acc.device), "min")
    if finite.item() < 1:
        raise Diverged(f"the weights at step {step} are not finite; {what} not saved; {last_good(checkpoint_root)}")


def last_good(checkpoint_root: Path) -> str:
    newest = ckpt.latest_checkpoint(checkpoint_root)
    return f"last good checkpoint: {newest}" if newest else "no checkpoint was saved before"
