"""Contrastive few-label fine-tuning (``finetune.mode=contrastive``): what it adds to text fine-tuning.

Each labelled example brings a partner (:mod:`nlp_ssl.objectives.label_pairs`), and the classifier
trains on ``L_cls + w·L_contrastive`` (:mod:`nlp_ssl.tasks.contrastive_classification`) in the one
trainer: the head is the model's own, trained end to end with the contrastive loss, so the result is
the same plain ``*ForSequenceClassification`` folder as plain fine-tuning's, and it composes with the
auxiliary LM loss (``finetune.aux_lm``) and with any checkpoint (e.g. after SimCSE or MLM continued
pretraining). Validation batches get partners drawn from the validation rows (epoch 0, fixed), so the
validation loss includes the contrastive term; accuracy counts each validation example once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nlp_ssl.config import check_ranges
from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives.label_pairs import LabelPartners, PartnerCollator
from nlp_ssl.tasks.contrastive_classification import ContrastiveClassificationTask

#: Share of partners from the example's own class: supervised-contrastive negatives come from the
#: rest of the batch, so every partner is a positive; SetFit's pairs are half positive, half negative.
POSITIVE_SHARE = {"supcon": 1.0, "cosine": 0.5}


@dataclass
class ContrastiveFinetuneConfig:
    """``finetune.contrastive``: the contrastive loss of ``finetune.mode=contrastive``."""

    #: ``supcon``: supervised contrastive (InfoNCE, positives = the batch's rows of the same class);
    #: ``cosine``: SetFit's pair loss, (cosine - same class)² on each example and its partner. On the
    #: KJV genre task at k=8 (MiniLM) the two scored alike and ``pooling=mean`` lower (benchmarks/bench_fewlabel.py).
    loss: Literal["supcon", "cosine"] = "supcon"
    #: w in L = L_cls + w·L_contrastive.
    weight: float = 1.0
    #: InfoNCE temperature (``supcon`` only); SupCon's 0.1.
    temperature: float = 0.1
    #: ``head``: the features the classifier's output layer reads (BERT: the pooled [CLS]), which the
    #: saved model then classifies; ``mean``: the masked mean of the last hidden states.
    pooling: Literal["head", "mean"] = "head"

    def __post_init__(self):
        check_ranges(self, weight="(0, inf)", temperature="(0, inf)")


def contrastive_parts(settings: ContrastiveFinetuneConfig, task, collator, train, validation, seed: int,
                      eval_collator=None):
    """(task, training collator, validation collator) of contrastive fine-tuning, from plain
    fine-tuning's classification ``task`` and ``collator``; ``train``/``validation`` are the tokenized rows."""
    if task.regression:
        raise ConfigError("finetune.mode=contrastive needs classes; finetune.problem_type=regression has none")
    share = POSITIVE_SHARE[settings.loss]
    contrastive = ContrastiveClassificationTask(
        task.model, settings.loss, settings.weight, settings.temperature, settings.pooling,
        aux=task.aux, aux_weight=task.aux_weight if task.aux is not None else 0.0,
    )
    train_collator = PartnerCollator(collator, LabelPartners(train, seed, share))
    if validation is not None:
        eval_collator = PartnerCollator(eval_collator or collator, LabelPartners(validation, seed, share))
    return contrastive, train_collator, eval_collator


def describe(settings: ContrastiveFinetuneConfig) -> str:
    """The model card's words for the loss."""
    loss = ("supervised contrastive, temperature " + str(settings.temperature) if settings.loss == "supcon"
            else "SetFit's cosine pair loss")
    return f" + contrastive loss ({loss}, {settings.pooling} features, w={settings.weight})"
