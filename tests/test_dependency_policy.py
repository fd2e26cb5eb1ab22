"""The dependency policy (README, "Dependency policy"): torch and the Hugging Face stack are capped at the
minor release after the newest that CI passed, and the README names those versions."""

import re

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.helpers import ROOT

CAPPED = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "huggingface_hub")


def requirements():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {req.name: req for req in map(Requirement, project["dependencies"])}


def last_passed():
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Dependency policy", 1)[1].split("\n## ", 1)[0]
    assert "Last versions CI passed with:" in section, "the README's Dependency policy section lists no versions"
    paragraph = section.split("Last versions CI passed with:", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r"([A-Za-z_][\w-]*) (\d+(?:\.\d+)+)", paragraph))


@pytest.mark.parametrize("name", CAPPED)
def test_each_capped_package_stops_at_the_minor_release_after_the_one_ci_passed(name):
    versions = last_passed()
    assert name in versions, f"the README lists no last-passed version of {name}"
    passed = Version(versions[name])
    spec = requirements()[name].specifier
    caps = [s for s in spec if s.operator == "<"]
    assert caps, f"{name} has no upper bound in pyproject.toml"
    assert Version(caps[0].version) == Version(f"{passed.major}.{passed.minor + 1}"), (name, str(spec), str(passed))
    assert spec.contains(passed)


def test_the_readme_gives_a_pip_user_the_cpu_torch_that_setup_installs():
    pin = re.search(r'pip install -q "(torch==[\d.]+)"', (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")).group(1)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"pip install {pin} --index-url https://download.pytorch.org/whl/cpu" in readme
    assert requirements()["torch"].specifier.contains(pin.split("==")[1])


def test_data_scripts_are_not_said_to_install_with_the_package():
    """setup.py installs nlp_ssl and the recipes; the README must not promise more."""
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert "data_scripts" not in setup
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`data_scripts/` are not installed" in readme
