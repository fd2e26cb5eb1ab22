"""The few-label study harness behind ``recipes/study_text.py``, ``study_vision.py`` and ``study_corpus_size.py``.

A study is a table of methods (initialisations of one fine-tuning recipe, or linear baselines) run
over labels per class × seeds by a *plan*, on one runner, into one report:

- ``grid``: the keys and methods every study shares, and the plain plan (every method × k × seed once);
- ``protocol``: the rate-grid plan of the vision study (a learning rate per method chosen on
  validation, equal fixed budgets, a flattening check, learning-speed runs, a compute-matched point);
- ``runs``: every cell a run folder, made once (a recipe subprocess, or a baseline saved like a run),
  reused when finished, continued when not, several at a time, or read from another study's folder;
- ``report``: how a cell prints, the tables and per-seed gains, ``results.json`` and ``results.md``;
- ``plots``: accuracy against labels per class, training curves, learning speed;
- ``pretraining``: a text study's own pretraining runs; ``corpus_size``: the corpus-size curve.
"""

from nlp_ssl.study.grid import Method, Study, StudyConfig, run_study
from nlp_ssl.study.runs import Job, recipes_dir, run_recipe

__all__ = ["Job", "Method", "Study", "StudyConfig", "recipes_dir", "run_recipe", "run_study"]
