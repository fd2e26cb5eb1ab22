"""Packages: ``nlp_ssl*``, plus ``recipes/`` installed as ``nlp_ssl.recipes`` (with its YAML configs).

Metadata lives in pyproject.toml; only the package list is here, because setuptools' ``packages.find``
cannot see a package mapped from another folder, and a hand-written list would miss new subpackages.
"""

from setuptools import find_namespace_packages, setup

setup(
    # Namespace discovery also takes the folders of local metric modules (nlp_ssl/metrics/<name>/<name>.py).
    packages=[
        *find_namespace_packages(include=["nlp_ssl*"], exclude=["*__pycache__"]),
        "nlp_ssl.recipes",
        "nlp_ssl.recipes.configs",
    ],
    package_dir={"nlp_ssl.recipes": "recipes"},
    package_data={"nlp_ssl.recipes.configs": ["*.yaml"]},
)
