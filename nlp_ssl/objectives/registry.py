"""The objective registry: one entry per self-supervised objective, as ``models/architectures.py`` is for models.

An :class:`Objective` says all that recipes, fine-tuning and the study need to know about one
objective: its modality, its settings (a dataclass; a recipe config has a section of that name),
how its parts are built (the model with its pretraining head, the task that computes the loss, the
collators), and the auxiliary loss it lends a fine-tuning run. Code outside this table looks an
objective up by name and never compares names.

A new objective is a collator (``objectives/<name>.py``, with its settings dataclass), a task
(``tasks/``) if no existing one computes its loss, one entry in :data:`OBJECTIVES`, and a recipe YAML.
A researcher's own objective needs no edit of nlp_ssl: a Python file that defines an ``OBJECTIVE``
(an :class:`Objective`), named on the command line (``objective=my_objective.py``); its settings
come from ``objective_args``. See :func:`find_objective`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nlp_ssl.config import build_section
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import special_token_fields
from nlp_ssl.models.architectures import is_causal, mlm_parts
from nlp_ssl.models.continued import build_pretraining_model
from nlp_ssl.objectives.clm import CLMCollator, CLMConfig, clm_aux_keys
from nlp_ssl.objectives.mlm import MLMAuxKeys, MLMCollator, MLMConfig, unigram_baseline_accuracy
from nlp_ssl.objectives.simcse import SimCSECollator, SimCSEConfig, whole_texts
from nlp_ssl.tasks.causal_lm import CausalLMAux, CausalLMTask, causal_lm_head
from nlp_ssl.tasks.masked_lm import MaskedLMAux, MaskedLMTask, masked_lm_head
from nlp_ssl.tasks.sentence_embedding import SentenceEmbeddingTask

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

    ``loss(classifier, pretrained)`` returns the :class:`~nlp_ssl.tasks.auxiliary.AuxiliaryLoss`
    (``pretrained``: text, the checkpoint loaded with this objective's ``head``, whose LM head the
    loss reuses; images, the fine-tuning config, whose ``model`` may hold a head to reuse) and
    ``batch_keys(**setup)`` the collator part that adds its keys to a classification batch.
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
    #: The HF head of the pretrained model (``models.builders.Head``).
    head: str | None = None
    #: Text: it trains a causal (left-to-right) model; fine-tuning's ``aux_lm=auto`` picks the
    #: objective whose ``causal`` matches the checkpoint.
    causal: bool = False
    #: The auxiliary loss it lends fine-tuning (None: it lends none).
    aux: Aux | None = None


# ------------------------------------------------------------------------------------ the table


def _mlm_parts(settings: MLMConfig, setup: TextSetup) -> Parts:
    tokenizer = setup.tokenizer
    collator = MLMCollator(
        tokenizer, mlm_probability=settings.mlm_probability, mask_replace_prob=settings.mask_replace_prob,
        random_replace_prob=settings.random_replace_prob, whole_word_mask=settings.whole_word_mask,
        pad_to_multiple_of=settings.pad_to_multiple_of, seed=setup.seed,
    )
    model = build_pretraining_model(setup.model, "masked_lm", tokenizer, learning_rate=setup.learning_rate,
                                    **special_token_fields(tokenizer))
    masking = "whole-word" if settings.whole_word_mask else "token-level"
    return Parts(
        model, MaskedLMTask(model, sparse=settings.sparse_head), collator, pipeline_tag="fill-mask",
        summary=f"masked language modelling ({settings.mlm_probability:.0%} masked, {masking})",
        word_ids=settings.whole_word_mask,
        baseline=lambda train, validation: {
            "eval_unigram_baseline_accuracy": unigram_baseline_accuracy(train, validation, collator)},
    )


def _clm_parts(settings: CLMConfig, setup: TextSetup) -> Parts:
    tokenizer = setup.tokenizer
    collator = CLMCollator(tokenizer, document_aware=settings.document_aware, pad_to_multiple_of=settings.pad_to_multiple_of)
    model = build_pretraining_model(
        setup.model, "causal_lm", tokenizer, learning_rate=setup.learning_rate,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    apart = " (documents kept apart in packed blocks)" if settings.document_aware else ""
    return Parts(model, CausalLMTask(model), collator, summary=f"causal language modelling{apart}",
                 pipeline_tag="text-generation")


def _simcse_parts(settings: SimCSEConfig, setup: TextSetup) -> Parts:
    tokenizer = setup.tokenizer
    # The bare encoder of the masked LM that the checkpoint (or a preset) builds: every parameter is in
    # the loss (DDP needs that), and the saved folder loads under any head of the architecture.
    masked_lm = build_pretraining_model(setup.model, "masked_lm", tokenizer, learning_rate=setup.learning_rate,
                                        **special_token_fields(tokenizer))
    found = None if is_causal(masked_lm.config) else mlm_parts(masked_lm)
    if found is None:
        raise ConfigError(f"objective simcse trains a bidirectional encoder; {masked_lm.config.model_type} has none "
                          "that nlp_ssl knows (models/architectures.py: mlm_encoder)")
    encoder = found[0]
    return Parts(
        encoder, SentenceEmbeddingTask(encoder, settings.temperature, settings.pooling),
        SimCSECollator(tokenizer, settings.pad_to_multiple_of), pipeline_tag="feature-extraction",
        summary=(f"unsupervised SimCSE (each text twice under dropout, in-batch negatives, temperature "
                 f"{settings.temperature}, {settings.pooling} pooling)"),
        examples=whole_texts,
    )


def _causal_lm_aux(classifier, pretrained):
    if not is_causal(classifier.config):
        raise ConfigError(f"aux_lm 'clm' needs a causal model; {classifier.config.model_type} is bidirectional: "
                          "use aux_lm=mlm")
    return CausalLMAux(causal_lm_head(classifier, pretrained))


OBJECTIVES: dict[str, Objective] = {o.name: o for o in [
    Objective(
        "mlm", "text", _mlm_parts, MLMConfig, "masked language modelling (BERT 80/10/10, optionally whole-word)",
        head="masked_lm",
        aux=Aux(loss=lambda classifier, pretrained: MaskedLMAux(masked_lm_head(classifier, pretrained)),
                batch_keys=lambda tokenizer, finetune, seed: MLMAuxKeys(tokenizer, finetune.mlm_probability, seed)),
    ),
    Objective(
        "clm", "text", _clm_parts, CLMConfig, "causal language modelling (GPT), optionally document-aware",
        head="causal_lm", causal=True,
        aux=Aux(loss=_causal_lm_aux, batch_keys=lambda **_: clm_aux_keys),
    ),
    Objective(
        "simcse", "text", _simcse_parts, SimCSEConfig,
        "unsupervised SimCSE: a text and itself under two dropout masks are positives, the batch's other texts negatives",
    ),
]}


def registered() -> dict[str, Objective]:
    return OBJECTIVES


def names(modality: Modality | None = None, aux: bool = False) -> list[str]:
    """Registered objectives, of one modality, or only those that lend an auxiliary loss."""
    return [n for n, o in registered().items() if (modality is None or o.modality == modality) and (o.aux or not aux)]


def find_objective(name: str, modality: Modality | None = None) -> Objective:
    """A registered objective, or a user's own: ``path/to/file.py`` (its ``OBJECTIVE``),
    ``file.py:NAME`` or ``package.module:NAME``. Unknown names are a one-line error listing the others."""
    objective = registered().get(name)
    if objective is None:
        if name.endswith(".py") or ":" in name:
            objective = _load_external(name)
        else:
            raise ConfigError(f"objective {name!r} is not registered; choose one of {names(modality)}, "
                              "or name your own as path/to/file.py")
    if modality is not None and objective.modality != modality:
        raise ConfigError(f"objective {name!r} is an {objective.modality} objective; this recipe trains "
                          f"{modality} objectives: {names(modality)}")
    return objective


def _load_external(spec: str) -> Objective:
    target, _, attribute = spec.partition(":") if not spec.endswith(".py") else (spec, "", "")
    attribute = attribute or "OBJECTIVE"
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ConfigError(f"objective {spec}: no such file {path}")
        module_name = f"nlp_ssl_user_objective_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path.resolve())
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module  # dataclasses and pickling (dataloader workers) look it up
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise ConfigError(f"objective {spec}: cannot import {target} ({error})") from None
    objective = getattr(module, attribute, None)
    if not isinstance(objective, Objective):
        raise ConfigError(f"objective {spec}: {target} defines no {attribute} = Objective(...) "
                          f"(nlp_ssl.objectives.registry.Objective)")
    return objective


def auxiliary_objective(choice: str, causal: bool) -> Objective | None:
    """The objective whose auxiliary loss fine-tuning adds: ``none``, a name, or ``auto`` (the
    objective that pretrains models like this one: causal or not)."""
    if choice == "none":
        return None
    if choice == "auto":
        return next(o for o in registered().values() if o.modality == "text" and o.aux and o.causal == causal)
    objective = find_objective(choice, "text")
    if objective.aux is None:
        choices = ["none", "auto", *names("text", aux=True)]
        raise ConfigError(f"aux_lm {choice!r} lends no auxiliary loss; choose one of {choices}")
    return objective


def objective_settings(cfg, objective: Objective):
    """The objective's settings: its own section of ``cfg`` for a registered objective, else built
    from ``cfg.objective_args`` (a user's objective, whose dataclass nlp_ssl does not know)."""
    if objective.name in registered() and hasattr(cfg, objective.name):
        return getattr(cfg, objective.name)
    return build_section(objective.settings, dict(cfg.objective_args), "objective_args")


def with_objective_settings(cls: type, modality: Modality) -> type:
    """``cls`` with one settings section per registered objective of ``modality`` (``mlm:``,
    ``rotation:`` ...) and ``objective_args`` for a user's own, so a new objective needs no recipe edit."""
    sections = [(o.name, o.settings, field(default_factory=o.settings))
                for o in registered().values() if o.modality == modality and o.settings is not NoSettings]
    sections.append(("objective_args", dict[str, Any], field(default_factory=dict)))
    made = dataclasses.make_dataclass(cls.__name__, sections, bases=(cls,))
    made.__module__, made.__qualname__, made.__doc__ = cls.__module__, cls.__qualname__, cls.__doc__
    return made
