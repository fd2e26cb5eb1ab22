"""The objective registry (nlp_ssl/objectives/registry.py): one table that the recipes, fine-tuning and
the study look objectives up in, and a researcher's own objective from a file outside the package."""

from __future__ import annotations

import dataclasses
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from nlp_ssl.config import load_config
from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives import registry
from tests.helpers import ROOT, run_killed_and_resumed, start_cli, toy_texts, write_jsonl

EXAMPLE = ROOT / "docs" / "examples" / "replaced_tokens.py"


def test_every_entry_is_complete():
    assert registry.OBJECTIVES, "the table is empty"
    for name, objective in registry.OBJECTIVES.items():
        assert objective.name == name
        assert objective.modality in ("text", "image")
        assert dataclasses.is_dataclass(objective.settings) and objective.settings() is not None
        assert callable(objective.parts) and objective.description, name
        if objective.aux is not None:
            assert callable(objective.aux.loss) and callable(objective.aux.batch_keys), name


def test_unknown_and_wrong_modality_objectives_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"objective 'bogus' is not registered; choose one of \['mlm'"):
        registry.find_objective("bogus", "text")
    with pytest.raises(ConfigError, match="no such file"):
        registry.find_objective(str(tmp_path / "missing.py"))
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(ConfigError, match="defines no OBJECTIVE"):
        registry.find_objective(str(tmp_path / "empty.py"))
    image = next((n for n, o in registry.OBJECTIVES.items() if o.modality == "image"), None)
    if image is not None:
        with pytest.raises(ConfigError, match=f"objective '{image}' is an image objective"):
            registry.find_objective(image, "text")


def test_a_recipe_config_gets_a_section_per_objective_and_objective_args(tmp_path):
    @dataclasses.dataclass
    class Base:
        objective: str = "mlm"

    made = registry.with_objective_settings(Base, "text")
    text = [n for n, o in registry.OBJECTIVES.items() if o.modality == "text"]
    cfg = load_config(made, None, ["mlm.mlm_probability=0.4", "objective_args.rate=2"])
    assert {f.name for f in dataclasses.fields(made)} >= {"objective", "objective_args", *text}
    assert cfg.mlm.mlm_probability == 0.4 and cfg.objective_args == {"rate": 2}
    assert registry.objective_settings(cfg, registry.OBJECTIVES["mlm"]) is cfg.mlm
    with pytest.raises(ConfigError, match="mlm.mlm_probability must be in"):
        load_config(made, None, ["mlm.mlm_probability=2"])
    # A user's objective takes its settings from objective_args, checked against its own dataclass.
    user = registry.find_objective(str(EXAMPLE), "text")
    assert registry.objective_settings(load_config(made, None, ["objective_args.replace_prob=0.3"]), user).replace_prob == 0.3
    with pytest.raises(ConfigError, match="unknown config key objective_args.rate"):
        registry.objective_settings(cfg, user)


#: Objective names compared as strings: ``== "mlm"``, ``in ("rotation", ...)``, ``{"mim": ...}.get(``.
def _dispatch_pattern(names):
    name = "[\"'](?:" + "|".join(map(re.escape, names)) + ")[\"']"
    return re.compile(rf"(==|!=|\bin\b)\s*[\(\[{{]?\s*{name}|{name}\s*(==|!=)|{{\s*{name}\s*:.*}}\s*(\.get\(|\[)")


def test_no_objective_name_is_compared_outside_the_registry():
    """A new objective is a registry entry: nothing else may branch on an objective's name."""
    pattern = _dispatch_pattern(registry.OBJECTIVES)
    found = []
    for path in [*(ROOT / "nlp_ssl").rglob("*.py"), *(ROOT / "recipes").glob("*.py")]:
        if path.name == "registry.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if pattern.search(code):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "objective names dispatched outside the registry:\n" + "\n".join(found)


def test_the_dispatch_check_can_fail():
    pattern = _dispatch_pattern(["mlm", "rotation"])
    assert pattern.search('if aux == "mlm":') and pattern.search("aux in ('rotation', 'mim')")
    assert pattern.search('{"rotation": "rot", "mim": "mim"}.get(aux)') and not pattern.search('objective: str = "mlm"')
    assert not pattern.search('loss_weights = {"mlm": 1.0, "nsp": 1.0}')


# ------------------------------------------------------------------------- your own objective, end to end


SMALL = ["data.block_size=32", "impl.micro_batch_size=8", "train.global_batch_size=8", "log.every=1", "eval.every=1",
         "tokenizer.vocab_size=500", "log.progress_bar=false", "data.validation_split=0.1", "log.report_to=[]", "save.every=100",
         "train.max_steps=12", "data.max_train_documents=60", "objective=replaced_tokens.py", "objective_args.replace_prob=0.2"]


@pytest.mark.slow
def test_an_objective_from_a_file_outside_the_package_trains_and_resumes_exactly(tmp_path):
    """The docs' example, copied into a folder of the user's: no nlp_ssl file is edited."""
    shutil.copy(EXAMPLE, tmp_path / "replaced_tokens.py")
    corpus = write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in toy_texts(200)])
    run = [f"data.train_file={corpus}", *SMALL]

    straight = start_cli(tmp_path, "pretrain_mlm", *run, "output_dir=straight", threads=None)
    log = straight.communicate(timeout=600)[0]
    assert straight.returncode == 0, log[-3000:]
    run_killed_and_resumed(tmp_path, "pretrain_mlm", [*run, "output_dir=stopped"], r"step 5: eval_loss", threads=None)

    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(tmp_path / "stopped" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The saved folder is plain transformers, and the objective learned something a random model does not know.
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "straight")
    assert model.config.num_labels == 2
    import json

    results = json.loads((tmp_path / "straight" / "all_results.json").read_text())
    assert results["steps"] == 12 and results["eval_accuracy"] > 0.7  # most tokens are not replaced
    assert "replaced-token detection" in (tmp_path / "straight" / "README.md").read_text()
