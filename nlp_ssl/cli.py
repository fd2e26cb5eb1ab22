"""Entry points: a run ends with one line naming the culprit and a documented exit code
(``nlp_ssl.errors``), never a traceback for anything but a bug; and the ``nlp-ssl`` command."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from nlp_ssl import atomic
from nlp_ssl.config import first_parsed, forget_parsed
from nlp_ssl.errors import EXIT_INTERRUPTED, ConfigError, NlpSslError, PreemptedBeforeTraining, RunEnded
from nlp_ssl.training import run_lock

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


class PreemptedBeforeSetUp(PreemptedBeforeTraining):
    """SIGTERM before the run took its output_dir: the run has written no ``run_status.json`` yet."""


def run(main) -> None:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "httpx2", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def preempted(signum, frame):
        raise PreemptedBeforeSetUp("SIGTERM before the run was set up: nothing was lost; continue with resume=auto")

    # Until the run is set up (make_accelerator takes over), SIGTERM loses nothing: exit 75, requeue.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, preempted) if main_thread else None
    forget_parsed()
    try:
        main()
    except NlpSslError as e:
        run_lock.release_all()
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except (RunEnded, PreemptedBeforeTraining) as e:
        if isinstance(e, PreemptedBeforeSetUp):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the record short
            record_preemption(first_parsed(), str(e))
        print(str(e) if e.exit_code == 0 else f"stopped: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:  # before training: there is nothing to save yet
        print("interrupted before training started; nothing was saved", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def record_preemption(cfg, message: str) -> None:
    """``preempted`` in the run_status.json of a run stopped before it was set up, so that a requeue loop
    requeues its first launch too: written by the main process, as the run itself would, and only into
    a folder the run may write to (the run's own checks) that no live run holds (its lock, not waited
    for). Before the config is read there is no folder to write to."""
    if not getattr(cfg, "STATUS_IN_OUTPUT_DIR", False) or int(os.environ.get("RANK", "0")) != 0:
        return
    # Imported already by the recipe that read cfg.
    from nlp_ssl.training import checkpointing, guard, setup

    try:
        setup.check_output_dir(cfg.output_dir, cfg.write_into_cwd)
        run_lock.acquire(cfg.output_dir)
    except ConfigError:
        return
    try:
        newest = checkpointing.latest_checkpoint(Path(cfg.output_dir) / "checkpoints")
        step = checkpointing.checkpoint_step(newest) if newest is not None else 0
        guard.write_status(Path(cfg.output_dir), "preempted", PreemptedBeforeSetUp.exit_code, step, message)
    finally:
        run_lock.release_all()


# ---------------------------------------------------------------------------------------------
# The ``nlp-ssl`` command (torchtune's ``tune``): ls, run, cp over the installed recipes.

RECIPES = "nlp_ssl.recipes"
USAGE = """usage: nlp-ssl ls                                      list the recipes and their configs
       nlp-ssl run <recipe|file.py> [--config <file|config>] [key=value ...]
       nlp-ssl cp <recipe|config.yaml> <path>               an editable copy (path.yaml: the config only)
       nlp-ssl prepare output_dir=<dir> [data.*, tokenizer.*, word_ids=true ...]
                                                         tokenize a corpus once; runs read it with data.prepared=<dir>"""


def recipes() -> dict[str, Traversable]:
    """Installed recipe name → its file."""
    files = sorted(resources.files(RECIPES).iterdir(), key=lambda p: p.name)
    return {p.name[:-3]: p for p in files if p.name.endswith(".py") and not p.name.startswith("_")}


def configs() -> dict[str, Traversable]:
    """Installed config file name (``pretrain_mlm.yaml``) → its file."""
    root = resources.files(RECIPES) / "configs"
    return {p.name: p for p in sorted(root.iterdir(), key=lambda p: p.name) if p.name.endswith(".yaml")}


def owner(config: str, names) -> str | None:
    """The recipe a config belongs to: the longest recipe name that it is or starts with (``<recipe>_*.yaml``)."""
    stem = config.removesuffix(".yaml")
    return max((n for n in names if stem == n or stem.startswith(n + "_")), key=len, default=None)


def summary(path: Traversable) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _ls() -> None:
    names = recipes()
    by_recipe = {n: [] for n in names}
    for config in configs():
        if (n := owner(config, names)) is not None:
            by_recipe[n].append(config)
    listed = {n: ",".join(found) or "-" for n, found in by_recipe.items()}  # one column, split on whitespace
    width = max(map(len, names), default=6) + 2
    config_width = max(map(len, listed.values()), default=7) + 2
    print(f"{'RECIPE':<{width}}{'CONFIGS':<{config_width}}DOES")
    for n, path in names.items():
        print(f"{n:<{width}}{listed[n]:<{config_width}}{summary(path)}")


def _load_recipe(name: str):
    """``nlp_ssl.recipes.<name>``, or a recipe file (a copy from ``nlp-ssl cp``)."""
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            hint = f"; the installed recipe is run by name: nlp-ssl run {path.stem}" if path.stem in recipes() else ""
            raise ConfigError(f"recipe file {name}: does not exist{hint}")
        spec = importlib.util.spec_from_file_location(f"nlp_ssl_recipe_{path.stem}", path)
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look themselves up there
        spec.loader.exec_module(module)
    else:
        if name not in recipes():
            raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(recipes())} (or a recipe .py file)")
        module = importlib.import_module(f"{RECIPES}.{name}")
    if not callable(getattr(module, "main", None)):
        raise ConfigError(f"recipe {name}: has no main(argv) function")
    return module


def _config_paths(argv: list[str]) -> list[str]:
    """``--config pretrain_mlm`` (or ``pretrain_mlm.yaml``) names an installed config when no such file exists."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            value = out[i + 1]
        else:
            value = arg[len("--config="):] if arg.startswith("--config=") else None
        if value is None or Path(value).exists():
            continue
        installed = configs().get(value if value.endswith(".yaml") else value + ".yaml")
        if installed is not None:
            resolved = str(installed)
            if arg == "--config":
                out[i + 1] = resolved
            else:
                out[i] = f"--config={resolved}"
    return out


def _cp(name: str, dest: str) -> None:
    """A recipe into ``dest`` (a folder, or a name ending in .py) with its config in ``configs/`` beside it, so the
    copy runs as it is; a config alone when ``name`` or ``dest`` ends in ``.yaml``."""
    names, yamls = recipes(), configs()
    recipe = name.removesuffix(".py")
    if name.endswith(".yaml") or (dest.endswith(".yaml") and recipe in names):
        config = name if name.endswith(".yaml") else f"{recipe}.yaml"
        if config not in yamls:
            raise ConfigError(f"unknown config {config!r}; choose one of {', '.join(yamls)}")
        target = Path(dest) / config if Path(dest).is_dir() else Path(dest)
        copies = {target: yamls[config]}
    elif recipe in names:
        target = Path(dest) if dest.endswith(".py") else Path(dest) / f"{recipe}.py"
        copies = {target: names[recipe]}
        for config, path in yamls.items():
            if owner(config, names) == recipe:
                copies[target.parent / "configs" / config] = path
    else:
        raise ConfigError(f"unknown recipe or config {name!r}; choose one of {', '.join([*names, *yamls])}")
    existing = [str(p) for p in copies if p.exists()]
    if existing:
        raise ConfigError(f"{', '.join(existing)}: already exists; remove it or copy elsewhere")
    for target, source in copies.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(target, source.read_bytes())
        print(f"copied {name} to {target}")


def main(argv: list[str] | None = None) -> None:
    """``nlp-ssl ls | run | cp``; ``run`` runs the recipe in this process, so one-line errors, exit codes
    and a multi-process launch (``accelerate launch -m nlp_ssl run ...``) are the recipe's own."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command in ("", "-h", "--help", "help"):
        print(USAGE)
        raise SystemExit(0 if command else 2)
    if command == "ls" and not args:
        return _ls()
    if command == "run" and args and not args[0].startswith("-"):
        return run(lambda: _load_recipe(args[0]).main(_config_paths(args[1:])))
    if command == "cp" and len(args) == 2:
        return run(lambda: _cp(*args))
    if command == "prepare":
        from nlp_ssl.data import prepare

        return run(lambda: prepare.main(args))
    print(f"error: bad arguments: nlp-ssl {' '.join(argv)}\n{USAGE}", file=sys.stderr)
    raise SystemExit(2)

