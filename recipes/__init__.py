"""The recipes, installed as ``nlp_ssl.recipes``: each is a page (config → data → model → ``Trainer.fit``)
with its YAML in ``configs/``, run as a script, with ``python -m nlp_ssl.recipes.<name>`` or ``nlp-ssl run <name>``."""
