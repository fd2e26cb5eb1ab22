"""Self-supervised objectives as seeded data collators over 🤗 datasets."""

from nlp_ssl.objectives.image_classification import ImageClassificationCollator
from nlp_ssl.objectives.mim import MaskedImageCollator
from nlp_ssl.objectives.mlm import MLMCollator
from nlp_ssl.objectives.rotation import RotationCollator

__all__ = ["ImageClassificationCollator", "MLMCollator", "MaskedImageCollator", "RotationCollator"]
