"""``python -m nlp_ssl`` is the ``nlp-ssl`` command: ``accelerate launch -m nlp_ssl run <recipe> ...``
starts a recipe in every process of a multi-process launch."""

from nlp_ssl.cli import main

main()
