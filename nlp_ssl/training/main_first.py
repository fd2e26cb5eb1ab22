"""Data preparation on the main process first, with a wait that is a setting and one outcome for all.

Recipes prepare their data inside ``accelerator.main_process_first()``, as Accelerate teaches: the main
process tokenizes and fills the caches while the others wait, then they read the caches. Plain
Accelerate waits in a barrier of the training backend, so the wait is the backend's timeout (NCCL's ten
minutes, which a large corpus outlasts), and a main process that fails leaves the others in that barrier
(NCCL) or ends them with a traceback (gloo). :class:`RunAccelerator` waits over a gloo group of its own
whose timeout is the run's ``prepare_timeout``, and shares how the block ended: when one process fails,
every process, on every machine, stops with the same one line.
"""

from __future__ import annotations

import datetime
import logging
import time
from contextlib import contextmanager

import torch.distributed as dist
from accelerate import Accelerator

from nlp_ssl.errors import ConfigError, NlpSslError, PreemptedBeforeTraining, RunEnded
from nlp_ssl.training import machine

logger = logging.getLogger("nlp_ssl.trainer")

#: Where the data is prepared first: by the run's main process (a disk every machine shares), or by
#: the first process of each machine (each machine has its own disk and caches).
PREPARE_ON = ("main", "each_machine")


class RunAccelerator(Accelerator):
    """An Accelerator whose ``main_process_first`` waits at most ``prepare_timeout`` seconds and passes
    a failure inside the block on to every process."""

    def __init__(self, *args, prepare_timeout: float, prepare_on: str = "main", **kwargs):
        super().__init__(*args, **kwargs)
        self.prepare_timeout = float(prepare_timeout)
        self.prepare_on = prepare_on
        self._first_groups: dict[bool, dist.ProcessGroup] = {}

    @contextmanager
    def main_process_first(self):
        with self._goes_first(per_machine=self.prepare_on == "each_machine"):
            yield

    @contextmanager
    def local_main_process_first(self):
        with self._goes_first(per_machine=True):
            yield

    @contextmanager
    def _goes_first(self, per_machine: bool):
        if self.num_processes == 1 or not dist.is_initialized():
            yield
            return
        group = self._group(per_machine)
        failure = None
        if self.is_local_main_process if per_machine else self.is_main_process:
            try:
                yield
            except BaseException as error:
                failure = error
            self._share(group, failure)
        else:
            began = time.monotonic()
            failure = self._received(group)
            if failure is None:
                if self.is_local_main_process:
                    logger.info("waited %.1f s for the %s to prepare the data (impl.prepare_timeout %g s)",
                                time.monotonic() - began, "first process of this machine" if per_machine else
                                "main process", self.prepare_timeout)
                try:
                    yield
                except BaseException as error:
                    failure = error
        self._agree(self._group(False), failure)

    def _group(self, per_machine: bool) -> dist.ProcessGroup:
        """A gloo group (every process, or this machine's) whose collectives time out after prepare_timeout."""
        if per_machine not in self._first_groups:
            timeout = datetime.timedelta(seconds=self.prepare_timeout)
            if per_machine:
                size = machine.local_world_size(self.num_processes)
                group, _ = dist.new_subgroups(group_size=size, timeout=timeout, backend="gloo")
            else:
                group = dist.new_group(timeout=timeout, backend="gloo")
            self._first_groups[per_machine] = group
        return self._first_groups[per_machine]

    def _share(self, group: dist.ProcessGroup, error: BaseException | None) -> None:
        """The leader tells the waiting processes how its block ended."""
        try:
            dist.broadcast_object_list([_portable(error, self.process_index)], group=group, group_src=0)
        except RuntimeError:
            if error is not None:
                return  # the leader's own failure is the one to report
            raise ConfigError(
                f"the other processes stopped waiting for this one to prepare the data (after impl.prepare_timeout="
                f"{self.prepare_timeout:g} seconds, unless they were killed): raise impl.prepare_timeout, or prepare the corpus "
                "once beforehand (nlp-ssl prepare, then data.prepared=<dir>)") from None

    def _received(self, group: dist.ProcessGroup) -> BaseException | None:
        shared = [None]
        try:
            dist.broadcast_object_list(shared, group=group, group_src=0)
        except RuntimeError as error:
            if not _timed_out(error):
                return _ended_without_a_word(self.process_index)
            return ConfigError(
                f"process {self.process_index} waited impl.prepare_timeout={self.prepare_timeout:g} seconds for the data to "
                "be prepared, and it was not: raise impl.prepare_timeout, or prepare the corpus once beforehand "
                "(nlp-ssl prepare, then data.prepared=<dir>)")
        return shared[0]

    def _agree(self, group: dist.ProcessGroup, failure: BaseException | None) -> None:
        """After the block, every process (of every machine) stops if any failed in it, with the first
        failure's line."""
        outcomes = [None] * dist.get_world_size(group)
        try:
            dist.all_gather_object(outcomes, _portable(failure, self.process_index), group=group)
        except RuntimeError as error:
            if failure is not None:
                raise failure from None
            if not _timed_out(error):
                raise _ended_without_a_word(self.process_index) from None
            raise ConfigError(
                f"process {self.process_index} waited impl.prepare_timeout={self.prepare_timeout:g} seconds for the other "
                "processes to finish preparing the data: raise impl.prepare_timeout") from None
        first = failure or next((o for o in outcomes if o is not None), None)
        if first is not None:
            raise first


def _portable(error: BaseException | None, process: int) -> BaseException | None:
    """The error as another process can raise it: the project's own errors as they are (one line each),
    anything else as a RunEnded that points at the process whose log holds the traceback."""
    if error is None or isinstance(error, (NlpSslError, PreemptedBeforeTraining, KeyboardInterrupt, RunEnded)):
        return error
    return RunEnded(f"process {process} failed while preparing the data ({type(error).__name__}: {error}); its log has "
                    "the traceback")


def _timed_out(error: RuntimeError) -> bool:
    """A collective that ran out of time (rather than one whose partner is gone: "Connection closed by peer")."""
    return "timed out" in str(error).lower()


def _ended_without_a_word(process: int) -> RunEnded:
    return RunEnded(f"process {process}: another process ended while the data was being prepared, without saying why "
                    "here (killed?); its log says why")
