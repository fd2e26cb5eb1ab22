#!/usr/bin/env bash
# Set up a fresh machine: the Debian data packages, a virtual environment, torch (CPU wheel) and nlp_ssl.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/debian_packages.sh

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: the CPU wheel on disk. The package's own range (<2.14) then installs nothing more.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import nlp_ssl, torch, transformers, datasets, accelerate; print('nlp_ssl ready: torch', torch.__version__, '| transformers', transformers.__version__)"
