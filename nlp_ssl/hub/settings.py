"""The Hub settings of a run, its errors, and the checks and timeouts every Hub call shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nlp_ssl.config import check_ranges
from nlp_ssl.errors import ConfigError, NlpSslError

#: Where the resumable training state lives inside the Hub repo (overwritten by every push).
CHECKPOINT_PATH = "checkpoints/last"
#: Sub-folder of a checkpoint holding the plain HF model export (what goes to the repo root).
HF_MODEL_SUBDIR = "hf_model"
#: Folder inside ``output_dir`` where checkpoints are copied before a background upload.
STAGING_DIR = ".hub_staging"

Strategy = Literal["end", "every_save", "checkpoint"]


class HubError(NlpSslError):
    """A push to, or a download from, the Hub that failed: one line, never containing the token."""


class HubCheckpointMissing(HubError):
    """The repo, revision or its ``checkpoints/last`` does not exist (``resume`` can then start fresh)."""


@dataclass
class HubConfig:
    """The Hub: where the run's outputs are pushed, how, and how long a request may wait. The token is
    never an option: it comes from ``HF_TOKEN`` or ``hf auth login``, so no config, log or saved file can hold it."""

    #: Push to the Hugging Face Hub.
    push: bool = False
    #: ``user/name``, or ``name`` in the token owner's namespace; default: the output folder's name.
    model_id: str | None = None
    private: bool = False
    revision: str | None = None
    #: ``end``: the final model; ``every_save``: also the model at each save; ``checkpoint``: also
    #: the resumable state under checkpoints/last (then ``resume=hub`` continues from it).
    strategy: Strategy = "end"
    #: Seconds a Hub request may wait for a connection or for the next bytes of an answer (loads too).
    timeout: float = 60.0
    #: Retries of a failed push (network errors, 5xx), 2 s apart and doubling: 5 ride out about a
    #: minute of Hub trouble.
    retries: int = 5

    def __post_init__(self):
        check_ranges(self, timeout="(0, inf)", retries="[0, inf)")


def apply_timeout(seconds: float) -> None:
    """Give every ``huggingface_hub`` request connect and read timeouts.

    Its client waits forever by default, so a server that accepts the connection and never answers
    would hang a run before training, printing nothing. A timed-out request is then retried like any
    network error, so the whole wait stays bounded.
    """
    import httpx2
    from huggingface_hub import close_session, set_client_factory
    from huggingface_hub.utils import _http

    timeout = httpx2.Timeout(seconds, connect=min(seconds, 10.0))

    def bound(request):
        """Callers pass their own timeouts: ``None`` (``HfApi.model_info``, which transformers calls to
        resolve a revision), which httpx takes as "wait forever", or a longer one (10 s for a file's
        metadata): every request waits at most the run's timeout."""
        given = request.extensions.get("timeout", {})
        request.extensions["timeout"] = {
            name: limit if given.get(name) is None else min(given[name], limit) for name, limit in timeout.as_dict().items()
        }

    def client_factory():
        client = _http.default_client_factory()
        client.timeout = timeout
        client.event_hooks["request"].append(bound)
        return client

    set_client_factory(client_factory)
    close_session()  # the next request builds a client with the timeouts
    _applied_timeout[0] = seconds


_applied_timeout = [HubConfig.timeout]
_known_repos: set[tuple[str, str]] = set()  # names the Hub confirmed in this process


def check_hub_repo(name: str, repo_type: Literal["model", "dataset"], key: str) -> None:
    """Ask the Hub about ``name`` once, before a loader does: a Hub that does not answer, or a name it
    does not know, is then one line naming ``key`` after at most ``hub.timeout`` seconds (the loaders
    retry each file for minutes, then raise). Offline (``HF_HUB_OFFLINE=1``) nothing is asked: the
    loaders read the local cache."""
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ConfigError(f"{key} {name}: no such folder (nor a Hub name: those look like user/name)") from None
    if constants.HF_HUB_OFFLINE or (name, repo_type) in _known_repos:
        return
    try:
        HfApi().repo_info(name, repo_type=repo_type)
        _known_repos.add((name, repo_type))
    except GatedRepoError:
        raise ConfigError(f"{key} {name}: a gated {repo_type}: accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{key} {name}: not a local folder, and no {repo_type} of that name on the Hub "
                          f"(a private one needs HF_TOKEN)") from None
    except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as e:
        raise HubError(f"{key} {name}: the Hub at {constants.ENDPOINT} did not answer within hub.timeout="
                       f"{_applied_timeout[0]:g}s ({type(e).__name__}); try again later, or set HF_HUB_OFFLINE=1 "
                       f"to use a copy in the local cache") from None
    except HfHubHTTPError as e:
        raise HubError(f"{key} {name}: the Hub answered {http_status(e)}: {first_line(e)}") from None


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def is_network_error(exc: BaseException) -> bool:
    try:
        import httpx2
    except ImportError:  # pragma: no cover - older huggingface_hub used requests/httpx
        httpx2 = None
    if httpx2 is not None and isinstance(exc, httpx2.TransportError):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def first_line(text: str, limit: int = 200) -> str:
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."
