"""What an objective is, for the registry (:mod:`nlp_ssl.objectives.registry`) and for a researcher's own.

An :class:`Objective` names its settings and a ``parts`` function that builds, from those settings
and a setup (:class:`TextSetup` or :class:`ImageSetup`), the :class:`Parts` a recipe hands the
trainer; optionally the checks to run before any data is read, the extra data columns it reads, how
to recognise its checkpoints, and the auxiliary loss (:class:`Aux`) it lends few-label fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Modality = Literal["text", "image"]


@dataclass
class NoSettings:
    """For an objective without settings."""


@dataclass
class TextSetup:
    """What a text objective's parts are built from."""

    tokenizer: Any
    #: The recipe's ``model`` section (a ``models.ModelConfig``).
    model: Any
    seed: int
    learning_rate: float


@dataclass
class ImageSetup:
    """What an image objective's parts are built from."""

    model: Any
    #: The recipe's ``image`` section (a ``vision.image.ImageConfig``).
    image: Any
    seed: int
    augment: bool
    #: The loaded image splits (``train``, ``validation``), for an objective that reads more than
    #: each image (MICLe's groups); set before ``parts`` is called.
    splits: Any = None


@dataclass
class Parts:
    """An objective, built: what the recipe hands the trainer."""

    #: The plain HF model that is saved (``task.model``).
    model: Any
    task: Any
    collator: Callable
    #: Validation batches (None: the training collator).
    eval_collator: Callable | None = None
    #: One line for the model card.
    summary: str = ""
    #: The ``pipeline`` task the saved folder serves, if any.
    pipeline_tag: str | None = None
    #: Text: packed blocks carry word ids (whole-word masking).
    word_ids: bool = False
    #: ``(train, validation) -> dict`` of reference results for ``all_results.json`` (e.g. a baseline).
    baseline: Callable | None = None
    #: Text: ``(corpus, tokenizer) -> {"train", "validation"}`` when the examples are not packed
    #: ``block_size`` blocks (``data.text.TextCorpus.blocks``), e.g. whole texts truncated (SimCSE).
    examples: Callable | None = None


@dataclass(frozen=True)
class Aux:
    """What an objective lends fine-tuning as an auxiliary loss, ``L = L_task + λ·L_aux``.

    ``loss(classifier, source)`` returns the :class:`~nlp_ssl.tasks.auxiliary.AuxiliaryLoss`, its head
    the pretrained one where the checkpoint has it (``source``: text, the checkpoint loaded with this
    objective's ``head``; images, the ``model`` config, whose checkpoint the objective may recognise).
    ``batch_keys(settings, ...)`` gives the collator part that adds the loss's keys to a classification
    batch (text: ``tokenizer=``, ``seed=``; images: ``setup=``, an :class:`ImageSetup`).
    """

    loss: Callable
    batch_keys: Callable


@dataclass(frozen=True)
class Objective:
    name: str
    modality: Modality
    #: ``(settings, setup) -> Parts``; ``setup`` is a :class:`TextSetup` or an :class:`ImageSetup`.
    parts: Callable
    #: Its settings dataclass: a recipe config's section named after the objective.
    settings: type = NoSettings
    #: One line for ``--help`` and the docs.
    description: str = ""
    #: Its short name in tables and reports ("rotation (RotNet)"); default: ``name``.
    title: str = ""
    #: The HF head of the pretrained model (``models.builders.Head``).
    head: str | None = None
    #: Text: it trains a causal (left-to-right) model; fine-tuning's ``aux_lm=auto`` picks the
    #: objective whose ``causal`` matches the checkpoint.
    causal: bool = False
    #: The auxiliary loss it lends fine-tuning (None: it lends none).
    aux: Aux | None = None
    #: ``(settings, setup)``: checks that need the setup (image and patch sizes), before any data is read.
    check: Callable | None = None
    #: ``(settings) -> [column, ...]``: data columns it reads besides the image or text (MICLe's groups).
    columns: Callable | None = None
    #: ``(HF config) -> bool``: whether a checkpoint was pretrained by this objective (its head is reused,
    #: and fine-tuning's ``aux_task=auto`` picks it).
    recognises: Callable | None = None

    def __post_init__(self):
        if not self.title:
            object.__setattr__(self, "title", self.name)
