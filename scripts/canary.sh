#!/usr/bin/env bash
# The dependency canary: every test, in a separate virtual environment, on the newest release of every
# dependency with pyproject.toml's upper bounds dropped (torch: its CPU build). Run it before raising a
# cap, and monthly; it prints the versions it tested, which go into the README when it passes.
#   bash scripts/canary.sh                      # the whole suite
#   bash scripts/canary.sh tests/test_pipelines.py   # pytest arguments narrow it
# CANARY_VENV (default $TMPDIR/nlp_ssl-canary), CANARY_TORCH (default "torch": the newest release) and
# TORCH_INDEX_URL (default the CPU wheels) override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${CANARY_VENV:-${TMPDIR:-/tmp}/nlp_ssl-canary}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q --upgrade "${CANARY_TORCH:-torch}" \
  --extra-index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"

# The dependencies (and the test extra) as pyproject.toml lists them, less every upper bound.
"$VENV/bin/python" - > "$VENV/uncapped.txt" <<'PY'
try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib
from pip._vendor.packaging.requirements import Requirement

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for line in project["dependencies"] + project["optional-dependencies"]["test"]:
    req = Requirement(line)
    lower = ",".join(str(s) for s in req.specifier if s.operator in (">=", ">", "!="))
    if req.name != "torch":
        print(f"{req.name}{lower}")
PY
"$VENV/bin/python" -m pip install -q --upgrade -r "$VENV/uncapped.txt"
"$VENV/bin/python" -m pip install -q --no-deps -e .

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
names = ["transformers", "accelerate", "datasets", "torch", "tokenizers", "huggingface_hub", "torchdata", "evaluate"]
print("canary versions: " + ", ".join(f"{n} {md.version(n)}" for n in names))
PY
HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
echo "canary passed: raise the caps in pyproject.toml to these versions and list them in the README"
