#!/usr/bin/env bash
# Set up a fresh machine: the Debian data packages, a virtual environment, torch (CPU wheel) and nlp_ssl.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_DATA="dataset-fashion-mnist libsword-utils sword-text-kjv sword-text-sparv python3.11-doc"
if command -v apt-get >/dev/null 2>&1; then
  missing=$(for p in $DEBIAN_DATA; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    echo "installing Debian data packages: $missing"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: the CPU wheel on disk. The package's own range (<2.14) then installs nothing more.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import nlp_ssl, torch, transformers, datasets, accelerate; print('nlp_ssl ready: torch', torch.__version__, '| transformers', transformers.__version__)"
