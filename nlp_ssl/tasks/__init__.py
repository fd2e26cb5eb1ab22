"""Losses: one Task per objective family, wrapping a plain HF model (see tasks/base.py)."""

from nlp_ssl.tasks.base import Task
from nlp_ssl.tasks.bert_pretraining import BertPretrainingTask
from nlp_ssl.tasks.causal_lm import CausalLMTask
from nlp_ssl.tasks.classification import SequenceClassificationTask
from nlp_ssl.tasks.masked_lm import MaskedLMTask
from nlp_ssl.tasks.vision import ImageClassificationTask, MaskedImageModelingTask
from nlp_ssl.tasks.xlm import XLMMaskedLMTask

__all__ = [
    "BertPretrainingTask",
    "CausalLMTask",
    "ImageClassificationTask",
    "MaskedImageModelingTask",
    "MaskedLMTask",
    "SequenceClassificationTask",
    "Task",
    "XLMMaskedLMTask",
]
