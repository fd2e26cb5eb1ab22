"""Typed dataclass configs read from YAML, with dotted ``key=value`` command-line overrides.

A recipe declares one dataclass (sections are nested dataclasses) and calls :func:`parse_config`.
Unknown keys are errors that list the valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nlp_ssl.errors import ConfigError

T = TypeVar("T")

logger = logging.getLogger("nlp_ssl.config")


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _strip_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp, where: str):
    """Check ``value`` against the annotation ``tp`` and convert the obvious cases (int -> float)."""
    if tp is Any:
        return value
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: null is not allowed here (expected {getattr(tp, '__name__', tp)})")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls: type[T], values: dict, where: str = "") -> T:
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; valid keys{' in ' + where if where else ''}: "
            + ", ".join(sorted(types_))
        )
    kwargs = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(value, types_[name], key)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a section's own range check names the field; add the section
        if where and not str(e).startswith(f"{where}."):
            raise ConfigError(f"{where}.{e}") from None
        raise


def build_section(cls: type[T], values: dict, where: str) -> T:
    """A config section from a mapping, checked like the rest of the config (``where`` names it in errors)."""
    return _build(cls, values, where)


_INTERVAL = re.compile(r"^([\[(])\s*(-?[\w.]+)\s*,\s*(-?[\w.]+)\s*([\])])$")


def check_ranges(obj, **intervals: str) -> None:
    """Range checks for ``__post_init__``: ``check_ranges(self, max_steps="(0, inf)", p="[0, 1)")``.

    Each field must lie in its interval (``(``/``)`` open, ``[``/``]`` closed); ``None`` passes, for
    optional fields. The error names the field and the value, so bad values fail before any work.
    """
    for name, interval in intervals.items():
        value = getattr(obj, name)
        if value is None:
            continue
        m = _INTERVAL.match(interval)
        if m is None:
            raise AssertionError(f"bad interval {interval!r}")
        left, low, high, right = m.group(1), float(m.group(2)), float(m.group(3)), m.group(4)
        ok = (value > low if left == "(" else value >= low) and (value < high if right == ")" else value <= high)
        if not ok or value != value:  # NaN fails every check
            if high == float("inf"):
                rule = f"> {m.group(2)}" if left == "(" else f">= {m.group(2)}"
            else:
                rule = f"in {interval}"
            raise ConfigError(f"{name} must be {rule}, got {value!r}")


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
    node[leaf] = value


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Defaults of ``cls``, then the YAML file, then ``key=value`` overrides (values parsed as YAML)."""
    tree = to_dict(cls())
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
        loaded = _move_keys(cls, loaded, f"config file {path}")
        _check_keys(cls, loaded, "", f"config file {path}")
        tree = _merge(tree, loaded)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        key = _moved_key(cls, key, "command line")
        _check_keys(cls, _nest(key, value), "", "command line")
        _set_dotted(tree, key, value)
    return _build(cls, tree)


def moved_keys(cls) -> dict[str, str]:
    """A config's renamed keys, old dotted name -> new (``MOVED_KEYS`` on the class and its bases)."""
    moved: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        moved.update(getattr(klass, "MOVED_KEYS", {}) or {})
    return moved


def _moved_key(cls, key: str, source: str) -> str:
    """The key's current name; an old name still works, with a one-line warning that names the new one."""
    moved = moved_keys(cls)
    head = next((old for old in moved if key == old or key.startswith(old + ".")), None)
    if head is None:
        return key
    new = moved[head] + key[len(head):]
    if os.environ.get("LOCAL_RANK", "0") == "0":  # once per machine, not once per process
        logger.warning("%s: config key %r is deprecated and will be removed; use %r", source, key, new)
    return new


def _move_keys(cls, tree: dict, source: str) -> dict:
    """A YAML mapping with each old key (``learning_rate``, ``finetune.mlm_probability``) moved to its new place."""
    out = copy.deepcopy(tree)
    for old in moved_keys(cls):
        *parents, leaf = old.split(".")
        chain = [out]
        for name in parents:
            chain.append(chain[-1].get(name) if isinstance(chain[-1], dict) else None)
        if isinstance(chain[-1], dict) and leaf in chain[-1]:
            value = chain[-1].pop(leaf)
            for parent, name, node in reversed(list(zip(chain, parents, chain[1:]))):
                if not node:  # an old section left empty goes too
                    del parent[name]
            _set_dotted(out, _moved_key(cls, old, source), value)
    return out


def build_config(cls: type[T], settings: dict[str, Any] | None = None) -> T:
    """A config from Python: ``{"train.max_steps": 4, "output_dir": "out"}``, dotted keys as on the command
    line, checked the same way (unknown keys, types, ranges)."""
    tree = to_dict(cls())
    for key, value in (settings or {}).items():
        key = _moved_key(cls, key, "settings")
        _check_keys(cls, _nest(key, value), "", "settings")
        _set_dotted(tree, key, value)
    return _build(cls, tree)


def _nest(dotted: str, value: Any) -> dict:
    tree: dict = {}
    _set_dotted(tree, dotted, value)
    return tree


def _check_keys(cls, values: dict, where: str, source: str) -> None:
    types_ = _field_types(cls)
    for k, v in values.items():
        key = f"{where}.{k}" if where else k
        if k not in types_:
            raise ConfigError(
                f"{source}: unknown config key {key!r}; valid keys"
                f"{' in ' + where if where else ''}: {', '.join(sorted(types_))}"
            )
        sub, _ = _strip_optional(types_[k])
        if dataclasses.is_dataclass(sub) and isinstance(v, dict):
            _check_keys(sub, v, key, source)


#: The first config that parse_config read since forget_parsed(): the run's own (a study's inner
#: configs come later), whose output_dir a SIGTERM before the run is set up reports to (``nlp_ssl.cli.run``).
_first_parsed: list = []


def first_parsed():
    return _first_parsed[0] if _first_parsed else None


def forget_parsed() -> None:
    _first_parsed.clear()


def parse_config(cls: type[T], argv: list[str] | None = None, default_yaml: str | Path | None = None) -> T:
    """Command line: ``[--config file.yaml] [key=value ...]``; ``default_yaml`` is used without --config."""
    argv = list(sys.argv[1:] if argv is None else argv)
    yaml_path = default_yaml
    overrides = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            print(describe(cls))
            raise SystemExit(0)
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a path to a YAML file")
            yaml_path = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            yaml_path = arg.split("=", 1)[1]
        elif arg.startswith("--"):
            overrides.append(arg[2:])
        else:
            overrides.append(arg)
        i += 1
    cfg = load_config(cls, yaml_path, overrides)
    if not _first_parsed:
        _first_parsed.append(cfg)
    return cfg


def describe(cls, prefix: str = "") -> str:
    """Every key with its default, for ``--help``: the top-level keys, then each section under a
    header with the first line of its docstring (what is learned, how it runs, evaluation, the Hub ...)."""
    lines, sections = [], []
    default = cls()
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            sections.append((f.name, type(value)))
        else:
            lines.append(f"  {prefix}{f.name} = {value!r}")
    for name, section in sections:
        doc = (section.__doc__ or "").strip().splitlines()
        about = doc[0] if doc and not doc[0].startswith(section.__name__ + "(") else ""
        lines.append(f"\n{prefix}{name}:{' ' + about if about else ''}")
        lines.append(describe(section, f"{prefix}{name}."))
    return "\n".join(line for line in lines if line)


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
