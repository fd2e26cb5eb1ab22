"""Self-supervised objectives as seeded data collators over 🤗 datasets."""

from nlp_ssl.objectives.mlm import MLMCollator

__all__ = ["MLMCollator"]
