"""Errors that speak the user's language: each names the file, field or value at fault.

Every way a run can end has an exit code of its own, so that a job script can tell "fix the input"
from "requeue me" (``nlp_ssl.cli.run`` turns the exception into one line and the code):

====  ===========================================================================================
0     finished (or ``resume=auto`` found the run already finished)
1     a bug: an unexpected exception, with its traceback
2     bad input (config value, data file, checkpoint path), reported before training
3     diverged: ``max_bad_steps`` optimizer steps in a row had a non-finite loss or gradient
74    a checkpoint could not be written (disk full, I/O error); the previous one is intact
75    stopped by SIGTERM or SIGINT after saving a checkpoint, or by SIGTERM before training started
      (nothing lost): requeue with ``resume=auto``
130   interrupted (Ctrl-C) before training started, or a second Ctrl-C; nothing saved
====  ===========================================================================================
"""

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_WRITE_FAILED = 74  # sysexits EX_IOERR
EXIT_PREEMPTED = 75  # sysexits EX_TEMPFAIL: try again later
EXIT_INTERRUPTED = 130


class NlpSslError(ValueError):
    """Base class: bad input that is caught before training starts."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(NlpSslError):
    """A config file or override that does not fit the recipe's dataclass."""


class DataError(NlpSslError):
    """A data file, column or example that cannot be used."""


class CheckpointError(NlpSslError):
    """A checkpoint that is missing, incomplete or damaged; the message names the bad file."""


class RunEnded(Exception):
    """Training ended early on purpose; ``exit_code`` tells a job script what happened."""

    exit_code = 1


class RunComplete(RunEnded):
    """``resume=auto`` on a run that has already finished: nothing to do."""

    exit_code = 0


class Diverged(RunEnded):
    exit_code = EXIT_DIVERGED


class CheckpointWriteFailed(RunEnded):
    exit_code = EXIT_WRITE_FAILED


class Preempted(RunEnded):
    exit_code = EXIT_PREEMPTED


class PreemptedBeforeTraining(BaseException):
    """SIGTERM while the run is set up (data, model): nothing is lost, requeue with ``resume=auto``.

    Raised from the signal handler, so it is a BaseException, as KeyboardInterrupt is: no library's
    ``except Exception`` around the interrupted code swallows it.
    """

    exit_code = EXIT_PREEMPTED
