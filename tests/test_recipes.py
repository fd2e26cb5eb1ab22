"""Guards on ``recipes/``: every YAML loads into its recipe's config, and recipes are pages that import
only the library (never each other, never through ``sys.path``), with no side effects at import."""

import ast
import importlib.util
import os
import subprocess
import sys

import pytest
import yaml

from nlp_ssl.cli import owner
from nlp_ssl.config import load_config, to_dict
from tests.helpers import ROOT

RECIPES = {p.stem: p for p in sorted((ROOT / "recipes").glob("*.py")) if not p.name.startswith("_")}
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))


def import_by_path(path):
    spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def config_class(path):
    """The class the recipe hands to ``parse_config`` (its first argument)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "parse_config" and node.args:
            return node.args[0].id
    raise AssertionError(f"{path.name} never calls parse_config(ConfigClass, ...)")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_into_its_recipes_config_class(config):
    recipe = owner(config.name, RECIPES)
    assert recipe is not None, f"{config.name} belongs to no recipe (name it <recipe>.yaml or <recipe>_*.yaml)"
    cls = getattr(import_by_path(RECIPES[recipe]), config_class(RECIPES[recipe]))
    cfg = load_config(cls, config)
    assert isinstance(cfg, cls)
    loaded = dict(leaves(to_dict(cfg)))
    for key, value in leaves(yaml.safe_load(config.read_text())):
        assert loaded[key] == value, (config.name, key)


def leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_every_recipe_has_its_default_config():
    assert {p.stem for p in CONFIGS} >= set(RECIPES)


def imports_of(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipes_import_only_the_library(name):
    tree = ast.parse(RECIPES[name].read_text())
    for module, level in imports_of(tree):
        root = module.split(".")[0]
        assert level == 0, f"{name}: relative import from {module!r}"
        assert root not in {"recipes", *RECIPES} and not module.startswith("nlp_ssl.recipes"), f"{name} imports recipe {module!r}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
            raise AssertionError(f"{name}: uses sys.path (line {node.lineno}); import from nlp_ssl instead")


def test_the_guards_catch_a_recipe_that_imports_a_sibling():
    tree = ast.parse("import sys\nsys.path.insert(0, '.')\nfrom pretrain_vit import ImageConfig\nfrom . import x\n")
    assert [m for m, _ in imports_of(tree)] == ["sys", "pretrain_vit", ""]


def test_importing_a_recipe_does_nothing(tmp_path):
    """No output, no files, no argv parsing: ``nlp-ssl ls`` and the config test import recipes freely."""
    code = "import sys\nfrom pathlib import Path\nfrom tests.test_recipes import import_by_path\n" \
           "for path in sys.argv[1:]:\n    import_by_path(Path(path))\n"
    proc = subprocess.run([sys.executable, "-c", code, *map(str, RECIPES.values())],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []
