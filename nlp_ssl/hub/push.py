"""Pushing a run's outputs in the background: in order, with retries, never waiting the training loop."""

from __future__ import annotations

import concurrent.futures
import http
import itertools
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from nlp_ssl.errors import ConfigError
from nlp_ssl.hub.settings import (
    CHECKPOINT_PATH,
    HF_MODEL_SUBDIR,
    STAGING_DIR,
    HubConfig,
    HubError,
    apply_timeout,
    first_line,
    http_status,
    is_network_error,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Files of a checkpoint that are training state, not model: not copied to the repo root.
STATE_PATTERNS = (
    "optimizer*", "scheduler*", "scaler*", "random_states*", "rng_state*", "custom_checkpoint*", "*.pkl",
)
#: What ``on_end`` leaves out of the final push: local checkpoints and our own staging copies.
END_IGNORE_PATTERNS = (
    f"{STAGING_DIR}/*", ".hub_resume/*", "best_model/*", ".tmp-*", "checkpoint-*", "checkpoints/*", "*.lock", "*.tmp",
    "run_status.json",  # the local run's state for its launcher, written after the push
)
#: Text files scanned for the token before upload (binary weights are not scanned).
_SCANNED_SUFFIXES = {".json", ".yaml", ".yml", ".txt", ".md", ".log", ".cfg", ".ini", ".toml", ".csv", ".py", ""}
_SCAN_LIMIT = 2 * 1024 * 1024


@dataclass
class PushResult:
    what: str
    commit_url: str | None


@dataclass
class PushSummary:
    """What ``HubPusher.wait`` saw: the pushes that landed and those skipped because a newer one replaced them."""

    repo_id: str | None
    pushed: list[PushResult] = field(default_factory=list)
    superseded: int = 0


class HubPusher:
    """Pushes a run's outputs to ``config.model_id`` on a background thread, in order, with retries.

    ``retries`` (default ``config.retries``), ``backoff`` and ``max_backoff`` control the retries
    around each whole upload (``backoff`` doubles each time). ``endpoint`` defaults to ``HF_ENDPOINT``.
    With ``config.push`` false every method is a no-op, so the trainer can call them
    unconditionally.
    """

    def __init__(
        self,
        config: HubConfig,
        output_dir: str | os.PathLike,
        *,
        retries: int | None = None,
        backoff: float = 2.0,
        max_backoff: float = 60.0,
        endpoint: str | None = None,
    ) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.enabled = bool(config.push)
        self.retries = config.retries if retries is None else retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.repo_id: str | None = None
        self._endpoint = endpoint
        self._api = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._futures: list[tuple[str, concurrent.futures.Future]] = []
        self._pending_checkpoint: tuple[concurrent.futures.Future, Path, int] | None = None
        self._superseded = 0
        self._seq = itertools.count()
        self._lock = threading.Lock()
        if self.enabled:
            self._validate()
            apply_timeout(config.timeout)

    # ------------------------------------------------------------------ setup
    def _validate(self) -> None:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        if self.config.strategy not in ("end", "every_save", "checkpoint"):
            raise ConfigError(
                f"hub.strategy {self.config.strategy!r} is not one of ['end', 'every_save', 'checkpoint']"
            )
        try:
            validate_repo_id(self.repo_name)
        except HFValidationError as e:
            raise ConfigError(f"hub.model_id {self.repo_name!r} is not a valid repo id: {first_line(e)}") from None

    @property
    def repo_name(self) -> str:
        """The repo as configured: ``hub.model_id``, else the output folder's name (as HF Trainer does)."""
        return self.config.model_id or self.output_dir.resolve().name

    @property
    def api(self):
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self._endpoint, library_name="nlp_ssl")
        return self._api

    def _token(self) -> str | None:
        from huggingface_hub import get_token

        return get_token()

    def _scrub(self, text: str) -> str:
        token = self._token()
        return text.replace(token, "***") if token else text

    def start(self) -> str | None:
        """Create the repo (and branch) if missing; returns the full repo id. Raises HubError at once."""
        if not self.enabled:
            return None
        if not self._token():
            raise HubError("push to hub: no Hugging Face token found: set HF_TOKEN or run `hf auth login`")
        url = self._call(
            lambda: self.api.create_repo(self.repo_name, private=self.config.private, exist_ok=True),
            f"create repo {self.repo_name}",
        )
        self.repo_id = url.repo_id
        revision = self.config.revision
        if revision and revision != "main":
            self._call(lambda: self.api.create_branch(self.repo_id, branch=revision, exist_ok=True),
                       f"create branch {revision}")
        shutil.rmtree(self.output_dir / STAGING_DIR, ignore_errors=True)  # left by a crashed run: ours
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlp_ssl-hub")
        logger.info("pushing to the Hub: %s (strategy %s)", self.repo_id, self.config.strategy)
        return self.repo_id

    # ------------------------------------------------------------------ errors and retries
    def _error(self, exc: BaseException, what: str) -> HubError:
        status = http_status(exc)
        where = f"for repo {self.repo_id or self.repo_name} at {self.api.endpoint}"
        if status is not None:
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "error"
            msg = f"push to hub: {status} {phrase} {where} ({what})"
            if status in (401, 403):
                msg += ": check HF_TOKEN or `hf auth login`"
                if status == 403:
                    msg += " (the token needs write access to this namespace)"
            else:
                server = getattr(exc, "server_message", None)
                if server:
                    msg += f": {first_line(server)}"
        else:
            name = type(exc).__name__
            msg = f"push to hub: {what} failed {where}: {name}: {first_line(exc)}"
        return HubError(self._scrub(msg))

    @staticmethod
    def _retryable(exc: BaseException) -> bool:
        status = http_status(exc)
        if status is not None:
            return status >= 500 or status in (408, 429)
        return is_network_error(exc)

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """``fn()``, retried on network errors and 5xx with exponential backoff; other errors raise at once."""
        from huggingface_hub.errors import OfflineModeIsEnabled

        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except HubError:
                raise
            except OfflineModeIsEnabled:
                raise HubError("push to hub: HF_HUB_OFFLINE=1 is set: unset it to push to the Hub") from None
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised as HubError
                if not self._retryable(exc) or attempt == self.retries:
                    err = self._error(exc, what)
                    if attempt:
                        err = HubError(f"{err} (gave up after {attempt + 1} attempts)")
                    raise err from None
                logger.warning("%s; retrying in %.1fs (%d/%d)", self._error(exc, what), delay, attempt + 1,
                               self.retries)
                time.sleep(delay)
                delay = min(self.max_backoff, delay * 2)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ pushing
    def _check_no_token(self, folder: Path, ignore_patterns) -> None:
        """Refuse to upload a folder whose small text files contain the token (e.g. a dumped config)."""
        from huggingface_hub.utils import filter_repo_objects

        token = self._token()
        if not token:
            return
        needle = token.encode()
        files = [p for p in folder.rglob("*") if p.is_file()]
        relpaths = {p.relative_to(folder).as_posix(): p for p in files}
        for rel in filter_repo_objects(relpaths, ignore_patterns=list(ignore_patterns or ())):
            path = relpaths[rel]
            if path.suffix.lower() in _SCANNED_SUFFIXES and path.stat().st_size <= _SCAN_LIMIT:
                if needle in path.read_bytes():
                    raise HubError(f"push to hub: refusing to upload {path}: it contains the Hub token")

    def _upload(self, folder: Path, path_in_repo: str | None, message: str, ignore_patterns, delete_patterns,
                cleanup: Path | None) -> PushResult:
        what = f"upload {path_in_repo or 'the repo root'} ({message})"
        try:
            self._check_no_token(folder, ignore_patterns)
            info = self._call(
                lambda: self.api.upload_folder(
                    repo_id=self.repo_id, folder_path=folder, path_in_repo=path_in_repo,
                    commit_message=message, revision=self.config.revision,
                    ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
                    delete_patterns=list(delete_patterns) if delete_patterns else None,
                ),
                what,
            )
            logger.info("pushed to the Hub: %s", message)
            return PushResult(message, getattr(info, "commit_url", None))
        finally:
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)

    def push_folder(
        self,
        local_dir: str | os.PathLike,
        path_in_repo: str | None = None,
        commit_message: str = "Upload with nlp_ssl",
        ignore_patterns=None,
        delete_patterns=None,
        *,
        _cleanup: Path | None = None,
    ) -> concurrent.futures.Future | None:
        """Queue an upload of ``local_dir``; the returned future raises HubError if it finally fails.

        The folder must not change until the upload is done (``on_save`` copies checkpoints first).
        """
        if not self.enabled:
            return None
        if self._executor is None:
            raise HubError("push to hub: HubPusher.start() must be called before pushing")
        future = self._executor.submit(self._upload, Path(local_dir), path_in_repo, commit_message,
                                       ignore_patterns, delete_patterns, _cleanup)
        with self._lock:
            self._futures.append((commit_message, future))
        return future

    def _stage(self, checkpoint_dir: Path, step: int) -> Path:
        """Copy a checkpoint out of the trainer's way: it may be rotated or overwritten during the upload.

        The model files go to the stage's root; with the ``checkpoint`` strategy everything also goes
        under ``checkpoints/last``.
        """
        from huggingface_hub.utils import filter_repo_objects

        stage = self.output_dir / STAGING_DIR / f"{next(self._seq):04d}-step{step}"
        if stage.exists():
            shutil.rmtree(stage)
        strategy = self.config.strategy
        rel = {p.relative_to(checkpoint_dir).as_posix(): p for p in checkpoint_dir.rglob("*") if p.is_file()}
        if strategy == "checkpoint":
            for name, src in rel.items():
                dst = stage / CHECKPOINT_PATH / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        # The repo root gets the plain HF model: the checkpoint's export if it has one (the trainer's
        # checkpoints do), else the checkpoint's non-state files.
        model_dir = checkpoint_dir / HF_MODEL_SUBDIR
        if model_dir.is_dir():
            model_files = {p.relative_to(model_dir).as_posix(): p for p in model_dir.rglob("*") if p.is_file()}
        else:
            model_files = {n: rel[n] for n in filter_repo_objects(rel, ignore_patterns=list(STATE_PATTERNS))}
        for name, src in model_files.items():
            root_dst = stage / name
            root_dst.parent.mkdir(parents=True, exist_ok=True)
            staged = stage / CHECKPOINT_PATH / src.relative_to(checkpoint_dir).as_posix()
            if strategy == "checkpoint":
                try:  # the staged copy is ours and never rewritten, so a hard link is safe
                    os.link(staged, root_dst)
                    continue
                except OSError:
                    pass
            shutil.copy2(src, root_dst)
        return stage

    def on_save(self, checkpoint_dir: str | os.PathLike, step: int) -> concurrent.futures.Future | None:
        """After a checkpoint save: with ``every_save`` push the model to the repo root; with
        ``checkpoint`` also replace ``checkpoints/last`` with the whole checkpoint (resumable).

        One commit per save. A save that is still queued when the next one arrives is dropped: only
        the newest state matters, and the Hub must not fall further and further behind.
        """
        if not self.enabled or self.config.strategy == "end":
            return None
        if self._executor is None:
            raise HubError("push to hub: HubPusher.start() must be called before pushing")
        checkpoint_dir = Path(checkpoint_dir)
        if not checkpoint_dir.is_dir():
            raise HubError(f"push to hub: checkpoint folder {checkpoint_dir} does not exist")
        with self._lock:
            pending = self._pending_checkpoint
            if pending is not None and pending[0].cancel():
                shutil.rmtree(pending[1], ignore_errors=True)
                self._superseded += 1
                logger.info("hub push of step %d skipped: step %d replaces it", pending[2], step)
        stage = self._stage(checkpoint_dir, step)
        deletes = [f"{CHECKPOINT_PATH}/*"] if self.config.strategy == "checkpoint" else None
        future = self.push_folder(stage, None, f"Training in progress, step {step}",
                                  delete_patterns=deletes, _cleanup=stage)
        with self._lock:
            self._pending_checkpoint = (future, stage, step)
        return future

    def on_end(self, output_dir: str | os.PathLike | None = None, ignore_patterns=END_IGNORE_PATTERNS,
               commit_message: str = "End of training") -> concurrent.futures.Future | None:
        """Push the final outputs (model, tokenizer, config, model card, plots, all_results.json).

        Local checkpoints and staging copies are left out (the resumable state is under ``checkpoints/last``).
        """
        if not self.enabled:
            return None
        output_dir = Path(output_dir) if output_dir is not None else self.output_dir
        return self.push_folder(output_dir, None, commit_message, ignore_patterns=list(ignore_patterns))

    def wait(self, timeout: float | None = None) -> PushSummary:
        """Block until every queued push is done; raise one HubError naming the first failure."""
        summary = PushSummary(self.repo_id)
        if not self.enabled:
            return summary
        with self._lock:
            futures, self._futures = self._futures, []
            summary.superseded, self._superseded = self._superseded, 0
        errors: list[str] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        for what, future in futures:
            if future.cancelled():
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                summary.pushed.append(future.result(timeout=left))
            except concurrent.futures.TimeoutError:
                errors.append(f"push to hub: {what} still running after {timeout}s")
            except HubError as e:
                errors.append(str(e))
            except Exception as e:  # noqa: BLE001 - reported in the one-line summary
                errors.append(self._scrub(f"push to hub: {what} failed: {type(e).__name__}: {first_line(e)}"))
        if errors:
            more = f" ({len(errors)} of {len(futures)} pushes failed)" if len(errors) > 1 else ""
            raise HubError(errors[0] + more)
        return summary

    def close(self) -> None:
        """Stop the worker thread after the queued pushes (``wait`` first to see their errors)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
