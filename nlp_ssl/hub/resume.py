"""Resuming from a checkpoint pushed to the Hub: one pinned commit, downloaded whole."""

from __future__ import annotations

import os
from pathlib import Path

from nlp_ssl.errors import ConfigError
from nlp_ssl.hub.settings import (
    CHECKPOINT_PATH,
    HubCheckpointMissing,
    HubConfig,
    HubError,
    apply_timeout,
    first_line,
    http_status,
)


def download_checkpoint(repo_id: str, revision: str | None, local_dir: str | os.PathLike,
                        endpoint: str | None = None) -> Path:
    """Download ``checkpoints/last`` of ``repo_id`` into ``local_dir``; returns the checkpoint folder.

    The revision is pinned to one commit for the listing and the download, and files left in
    ``local_dir`` by an earlier download but no longer on the Hub are removed: the folder is then
    exactly one pushed checkpoint, never a mix of two.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint)
    where = f"repo {repo_id}" + (f" revision {revision}" if revision else "")
    missing = f"resume from hub: {where} has no {CHECKPOINT_PATH}/ (push with hub.strategy=checkpoint)"
    try:
        sha = api.repo_info(repo_id, revision=revision).sha
        remote = [f.path for f in api.list_repo_tree(repo_id, path_in_repo=CHECKPOINT_PATH, recursive=True,
                                                    revision=sha) if isinstance(f, RepoFile)]
        if not remote:
            raise HubCheckpointMissing(missing)
        snapshot_download(repo_id, revision=sha, allow_patterns=[f"{CHECKPOINT_PATH}/*"], local_dir=local_dir,
                          endpoint=endpoint)
    except HubError:
        raise
    except OfflineModeIsEnabled:
        raise HubError(f"resume from hub: {where}: HF_HUB_OFFLINE=1 is set: unset it to download") from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise HubCheckpointMissing(f"resume from hub: {where} not found (or no access: check HF_TOKEN)") from None
    except RemoteEntryNotFoundError:
        raise HubCheckpointMissing(missing) from None
    except HfHubHTTPError as e:
        status = http_status(e)
        hint = ": check HF_TOKEN or `hf auth login`" if status in (401, 403) else ""
        raise HubError(f"resume from hub: {where}: {first_line(e)}{hint}") from None
    folder = Path(local_dir) / CHECKPOINT_PATH
    keep = {p[len(CHECKPOINT_PATH) + 1:] for p in remote}
    for path in sorted(folder.rglob("*"), reverse=True):  # children before their folders
        if path.is_file() and path.relative_to(folder).as_posix() not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return folder


def resolve_hub_resume(spec, cache_dir: str | os.PathLike, config: HubConfig | None = None,
                       output_dir: str | os.PathLike | None = None) -> Path | None:
    """Turn ``resume=hub`` or ``resume=hf://user/name[@revision]`` into a local checkpoint folder.

    ``hub`` means the repo this run pushes to (``config.model_id``, else the output folder's name,
    in the token owner's namespace). Any other spec returns None: it is not a Hub resume.
    """
    from huggingface_hub.errors import HfUriError
    from huggingface_hub.utils import parse_hf_uri

    if not isinstance(spec, str) or not (spec == "hub" or spec.startswith("hf://")):
        return None
    apply_timeout(config.timeout if config is not None else HubConfig.timeout)
    if spec == "hub":
        if config is None or (config.model_id is None and output_dir is None):
            raise ConfigError("resume=hub needs hub.model_id (or an output_dir to name the repo)")
        repo_id = config.model_id or Path(output_dir).resolve().name
        revision = config.revision
    elif spec.startswith("hf://"):
        try:
            uri = parse_hf_uri(spec)
        except HfUriError as e:
            raise ConfigError(f"resume {spec!r}: {first_line(e)}") from None
        if uri.type != "model" or uri.path_in_repo.strip("/") not in ("", CHECKPOINT_PATH):
            raise ConfigError(f"resume {spec!r}: expected hf://namespace/name[@revision] of a model repo")
        repo_id, revision = uri.id, uri.revision
    else:
        return None
    if "/" not in repo_id:
        from huggingface_hub import HfApi

        try:
            repo_id = f"{HfApi().whoami()['name']}/{repo_id}"
        except Exception as e:  # noqa: BLE001 - any failure means we cannot name the repo
            raise HubError(f"resume from hub: cannot find your Hub user name to locate {repo_id!r}: "
                           f"{type(e).__name__} (check HF_TOKEN or `hf auth login`)") from None
    local_dir = Path(cache_dir) / "hub-resume" / repo_id.replace("/", "--") / (revision or "main").replace("/", "--")
    return download_checkpoint(repo_id, revision, local_dir)
