from dataclasses import dataclass, field

import pytest

from nlp_ssl.config import load_config, parse_config
from nlp_ssl.errors import ConfigError


@dataclass
class Inner:
    size: int = 1
    name: str = "a"
    rate: float = 0.5
    extras: dict = field(default_factory=dict)


@dataclass
class Outer:
    output_dir: str = "out"
    max_steps: int = 10
    flag: bool = False
    tags: list[str] = field(default_factory=list)
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_yaml_then_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 20\ninner:\n  size: 3\n  name: yaml\n")
    cfg = load_config(Outer, path, ["inner.size=7", "flag=true", "inner.rate=1", "tags=a,b", "inner.extras={x: 1}"])
    assert load_config(Outer, None, ["inner.rate=2e-3"]).inner.rate == 0.002
    assert cfg.max_steps == 20 and cfg.inner.size == 7 and cfg.inner.name == "yaml"
    assert cfg.flag is True and cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert cfg.tags == ["a", "b"] and cfg.inner.extras == {"x": 1}


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'inner.sise'.*valid keys in inner: extras, name, rate, size"):
        load_config(Outer, None, ["inner.sise=3"])
    path = tmp_path / "c.yaml"
    path.write_text("max_step: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'max_step'.*max_steps"):
        load_config(Outer, path)


def test_type_errors_name_the_key():
    with pytest.raises(ConfigError, match="max_steps: expected an integer, got 'many'"):
        load_config(Outer, None, ["max_steps=many"])
    with pytest.raises(ConfigError, match="flag: expected true or false"):
        load_config(Outer, None, ["flag=3"])


def test_parse_config_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 5\n")
    cfg = parse_config(Outer, ["--config", str(path), "--output_dir=x", "maybe=null"], default_yaml=None)
    assert (cfg.max_steps, cfg.output_dir, cfg.maybe) == (5, "x", None)
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(Outer, ["--config", str(tmp_path / "missing.yaml")])


def test_model_config_overrides_reject_fields_the_hf_config_lacks(tmp_path):
    from nlp_ssl.models import ModelConfig, build_model

    # YAML reads "{num_hidden_layers:1}" (no space) as one key "num_hidden_layers:1" with no value.
    typo = load_config(ModelConfig, None, ["arch=vit", "config_overrides={num_hidden_layers:1}"])
    with pytest.raises(ConfigError, match=r"'num_hidden_layers:1'\] is not a field of ViTConfig"):
        build_model(typo, "image_classification")
    small = {"num_hidden_layers": 1, "image_size": 8, "patch_size": 4}
    fine = build_model(ModelConfig(arch="vit", config_overrides=small), "image_classification")
    assert fine.config.num_hidden_layers == 1
    fine.save_pretrained(tmp_path / "vit")
    with pytest.raises(ConfigError, match=r"\['hidden_sise'\] is not a field of ViTConfig"):
        build_model(ModelConfig(name_or_path=str(tmp_path / "vit"), config_overrides={"hidden_sise": 8}), "image_classification")


@dataclass
class Optim:
    """What is learned: the optimizer."""

    learning_rate: float = 1e-3
    warmup: int = 0


@dataclass
class Grouped:
    MOVED_KEYS = {"learning_rate": "optim.learning_rate", "warmup_steps": "optim.warmup", "old.size": "inner.size"}
    output_dir: str = "out"
    optim: Optim = field(default_factory=Optim)
    inner: Inner = field(default_factory=Inner)


def test_an_old_flat_key_still_works_with_one_warning_that_names_the_new_key(tmp_path, caplog):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 0.5\nold:\n  size: 4\noptim:\n  warmup: 3\n")
    with caplog.at_level("WARNING", logger="nlp_ssl.config"):
        cfg = load_config(Grouped, path, ["warmup_steps=9"])
    assert (cfg.optim.learning_rate, cfg.optim.warmup, cfg.inner.size) == (0.5, 9, 4)
    messages = [r.getMessage() for r in caplog.records]
    assert any("'learning_rate' is deprecated and will be removed; use 'optim.learning_rate'" in m for m in messages)
    assert any("command line: config key 'warmup_steps' is deprecated" in m and "'optim.warmup'" in m for m in messages)
    assert any("'old.size' is deprecated" in m and "'inner.size'" in m for m in messages)
    assert len(messages) == 3
    # The new keys give the same config, silently; an unknown key is still an error.
    caplog.clear()
    assert load_config(Grouped, None, ["optim.learning_rate=0.5"]).optim.learning_rate == 0.5 and not caplog.records
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(Grouped, None, ["learning_rat=1"])


def test_help_prints_the_groups_with_what_each_is_for(capsys):
    with pytest.raises(SystemExit):
        parse_config(Grouped, ["--help"])
    text = capsys.readouterr().out
    assert "optim: What is learned: the optimizer." in text
    assert text.index("output_dir") < text.index("optim:") < text.index("optim.learning_rate = 0.001")
    assert "\ninner:\n" in text and "inner.size = 1" in text


def test_every_recipes_help_says_what_each_section_is_for():
    import dataclasses
    import runpy

    from nlp_ssl.config import describe
    from tests.helpers import ROOT

    bare = []
    for recipe in sorted(p for p in (ROOT / "recipes").glob("*.py") if p.name != "__init__.py"):
        names = runpy.run_path(str(recipe), run_name="recipe_help")
        configs = [c for c in names.values() if isinstance(c, type) and dataclasses.is_dataclass(c)
                   and any(f.name == "output_dir" for f in dataclasses.fields(c))]  # a run's config
        assert configs, recipe.name
        for config in configs:
            bare += [f"{recipe.name} {line}" for line in describe(config).splitlines() if line.endswith(":")]
    assert bare == []
