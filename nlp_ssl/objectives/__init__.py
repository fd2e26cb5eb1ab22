"""Self-supervised objectives as seeded data collators over 🤗 datasets."""

from nlp_ssl.objectives.clm import CLMCollator
from nlp_ssl.objectives.image_classification import ImageClassificationCollator
from nlp_ssl.objectives.mim import MaskedImageCollator
from nlp_ssl.objectives.mlm import MLMCollator
from nlp_ssl.objectives.nsp import NSPCollator
from nlp_ssl.objectives.rotation import RotationCollator
from nlp_ssl.objectives.tlm import TLMCollator

__all__ = [
    "CLMCollator",
    "ImageClassificationCollator",
    "MLMCollator",
    "MaskedImageCollator",
    "NSPCollator",
    "RotationCollator",
    "TLMCollator",
]
