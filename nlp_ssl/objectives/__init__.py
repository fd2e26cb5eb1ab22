"""Self-supervised objectives as seeded data collators over 🤗 datasets."""

from nlp_ssl.objectives.clm import CLMCollator
from nlp_ssl.objectives.image_classification import ImageClassificationCollator
from nlp_ssl.objectives.mim import MaskedImageCollator
from nlp_ssl.objectives.mlm import MLMCollator
from nlp_ssl.objectives.nsp import NSPCollator, build_nsp_dataset, create_nsp_examples
from nlp_ssl.objectives.rotation import RotationCollator
from nlp_ssl.objectives.tlm import TLMCollator, prepare_monolingual_dataset, prepare_tlm_dataset, xlm_streams

__all__ = [
    "CLMCollator",
    "ImageClassificationCollator",
    "MLMCollator",
    "MaskedImageCollator",
    "NSPCollator",
    "RotationCollator",
    "TLMCollator",
    "build_nsp_dataset",
    "create_nsp_examples",
    "prepare_monolingual_dataset",
    "prepare_tlm_dataset",
    "xlm_streams",
]
