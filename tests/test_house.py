"""The rules of docs/DESIGN.md's map that the files themselves can be checked against: every module of
the package is on the map and every file the map names exists; no module passes 600 lines and no two share
a name; git holds no model weights."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "nlp_ssl"
DESIGN = ROOT / "docs" / "DESIGN.md"
#: Where a file the map names by its bare name may live.
HOMES = ("nlp_ssl", "recipes", "tests", "benchmarks", "docs", "results", "data_scripts", "scripts")


def modules() -> list[Path]:
    """The package's modules; the metric folders are 🤗 evaluate modules, each named after its folder."""
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.name != "__init__.py" and not (p.parent.parent.name == "metrics" and p.stem == p.parent.name))


def named_files(text: str) -> list[str]:
    """Files and folders the text names in backticks: ``nlp_ssl/trainer.py``, ``guard.py``, ``hub/``."""
    return sorted({t for t in re.findall(r"`(\w[\w./-]*)`", text) if re.search(r"\.(py|md|yaml|sh)$|/$", t)})


def test_every_module_is_on_the_map_and_every_file_it_names_exists():
    text = DESIGN.read_text(encoding="utf-8")
    unnamed = [str(p.relative_to(ROOT)) for p in modules() if f"`{p.name}`" not in text
               and not re.search(rf"{p.parent.name}/{re.escape(p.name)}\b", text)]
    assert not unnamed, f"modules {DESIGN.name} does not name: {unnamed}"
    missing = []
    for name in named_files(text):
        if "/" in name.rstrip("/"):
            found = (ROOT / name).exists() or (PACKAGE / name).exists()
        else:
            found = (ROOT / name).exists() or any(next((ROOT / home).rglob(name.rstrip("/")), None) for home in HOMES)
        if not found:
            missing.append(name)
    assert not missing, f"{DESIGN.name} names files that do not exist: {missing}"


def test_the_map_check_can_fail():
    assert named_files("`nlp_ssl/trainer.py` and `guard.py`, `hub/`, `model.arch`") == ["guard.py", "hub/", "nlp_ssl/trainer.py"]


def test_no_module_passes_600_lines_and_no_two_share_a_name():
    long = {str(p.relative_to(ROOT)): n for p in modules() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert not long, long
    names = [p.name for p in modules()]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_git_holds_no_model_weights():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True).stdout
    weights = [f for f in tracked.splitlines() if re.search(r"\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|onnx)$", f)]
    assert not weights, f"model weights tracked by git: {weights}"
