"""Push training outputs to the Hugging Face Hub in the background, and resume from a pushed checkpoint.

The trainer owns one :class:`HubPusher`. It calls ``start()`` before training (creates the repo, so a
bad token fails in seconds, not after the first epoch), ``on_save(checkpoint_dir, step)`` after each
checkpoint, ``on_end(output_dir)`` after the final save, then ``wait()``. Uploads run on one worker
thread, so commits land in order and training never waits on the network.

Uploads go through ``HfApi.upload_folder``: it already retries transient HTTP errors on the requests
it knows to be idempotent (preupload, commit on an explicit branch). Around the whole upload this
module adds a few slower retries for what is left (a dropped connection on another request, a Hub
that stays down for a minute) and turns errors into one-line :class:`HubError` messages. Failures
that a retry cannot fix (401/403, a missing repo) are not retried.

The token is resolved by ``huggingface_hub`` as usual (``HF_TOKEN``, then ``hf auth login``). It is
never logged, never part of an error message, and a folder whose small text files contain it is
refused rather than uploaded.
"""

from nlp_ssl.hub.push import END_IGNORE_PATTERNS, HubPusher, PushResult, PushSummary
from nlp_ssl.hub.resume import download_checkpoint, resolve_hub_resume
from nlp_ssl.hub.settings import (
    CHECKPOINT_PATH,
    HF_MODEL_SUBDIR,
    STAGING_DIR,
    HubCheckpointMissing,
    HubConfig,
    HubError,
    apply_timeout,
    check_hub_repo,
)

__all__ = [
    "CHECKPOINT_PATH", "END_IGNORE_PATTERNS", "HF_MODEL_SUBDIR", "STAGING_DIR", "HubCheckpointMissing", "HubConfig",
    "HubError", "HubPusher", "PushResult", "PushSummary", "apply_timeout", "check_hub_repo", "download_checkpoint",
    "resolve_hub_resume",
]
