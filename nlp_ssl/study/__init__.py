"""The few-label study harness, shared by ``recipes/study_text.py`` and ``recipes/study_vision.py``.

A study is a grid of methods (initialisations of one fine-tuning recipe, or linear baselines) ×
labels per class × seeds. Each fine-tuning run is a subprocess of the recipe, as a user would run
it; a finished run (its ``all_results.json`` exists) is reused, and an unfinished one continues
from its last checkpoint (``resume=auto``), so an interrupted study picks up where it stopped.
Every study writes the same files: ``results.json``, ``results.md``, ``accuracy_vs_labels.png`` and
``curves/``.

- ``grid``: the shared config keys, the methods, and the loop over the grid;
- ``runs``: where the recipes are, and one run as a subprocess (reuse, continue, fail loudly);
- ``report``: mean ± std over seeds, per-seed gains over a reference, ``results.json`` and the table;
- ``plots``: accuracy against labels per class, and training curves.
"""

from nlp_ssl.study.grid import Method, Study, StudyConfig, run_study
from nlp_ssl.study.runs import recipes_dir, run_recipe

__all__ = ["Method", "Study", "StudyConfig", "recipes_dir", "run_recipe", "run_study"]
