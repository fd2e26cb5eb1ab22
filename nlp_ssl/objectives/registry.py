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
from dataclasses import field
from pathlib import Path
from typing import Any

from nlp_ssl.config import build_section
from nlp_ssl.data.whole_texts import whole_texts
from nlp_ssl.errors import ConfigError
from nlp_ssl.models import special_token_fields
from nlp_ssl.models.architectures import is_causal, mlm_parts
from nlp_ssl.models.continued import build_pretraining_model
from nlp_ssl.objectives.clm import CLMCollator, CLMConfig, clm_aux_keys
from nlp_ssl.objectives.entry import Aux, ImageSetup, Modality, NoSettings, Objective, Parts, TextSetup
from nlp_ssl.objectives.mlm import MLMAuxKeys, MLMCollator, MLMConfig, unigram_baseline_accuracy
from nlp_ssl.objectives.rotation import RotationAuxViews
from nlp_ssl.objectives.simcse import SimCSECollator, SimCSEConfig
from nlp_ssl.tasks.causal_lm import CausalLMAux, CausalLMTask, causal_lm_head
from nlp_ssl.tasks.masked_lm import MaskedLMAux, MaskedLMTask, masked_lm_head
from nlp_ssl.tasks.sentence_embedding import SentenceEmbeddingTask
from nlp_ssl.vision import pretext as vision

__all__ = [
    "OBJECTIVES", "Aux", "ImageSetup", "NoSettings", "Objective", "Parts", "TextSetup", "aux_choices", "auxiliary_objective",
    "find_objective", "names", "objective_settings", "registered", "with_objective_settings",
]

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
        head="masked_lm", title="masked language modelling",
        aux=Aux(loss=lambda classifier, pretrained: MaskedLMAux(masked_lm_head(classifier, pretrained)),
                batch_keys=lambda mlm, tokenizer, seed: MLMAuxKeys(tokenizer, mlm.mlm_probability, seed)),
    ),
    Objective(
        "clm", "text", _clm_parts, CLMConfig, "causal language modelling (GPT), optionally document-aware",
        head="causal_lm", causal=True, title="causal language modelling",
        aux=Aux(loss=_causal_lm_aux, batch_keys=lambda clm, **_: clm_aux_keys),
    ),
    Objective(
        "simcse", "text", _simcse_parts, SimCSEConfig,
        "unsupervised SimCSE: a text and itself under two dropout masks are positives, the batch's other texts negatives",
    ),
    Objective(
        "rotation", "image", vision.rotation_parts, vision.RotationConfig, "RotNet: which of four rotations an image was given",
        head="image_classification", recognises=vision.made_by_rotation, title="rotation (RotNet)",
        aux=Aux(loss=vision.rotation_aux, batch_keys=lambda rotation, **_: RotationAuxViews()),
    ),
    Objective(
        "mim", "image", vision.mim_parts, vision.MIMConfig, "SimMIM: reconstruct the pixels of masked patches (L1)",
        head="masked_image_modeling", check=vision.check_mim, recognises=vision.made_by_mim,
        title="masked image modelling (SimMIM)",
        aux=Aux(loss=vision.mim_aux, batch_keys=lambda mim, setup: vision.mim_aux_views(mim, setup)),
    ),
    Objective(
        "simclr", "image", vision.simclr_parts, vision.SimCLRConfig,
        "SimCLR: two views of an image (or two images of one group, MICLe) together, the batch's others apart",
        columns=vision.simclr_columns, recognises=vision.made_by_simclr, title="contrastive (SimCLR)",
    ),
    Objective(
        "jigsaw", "image", vision.jigsaw_parts, vision.JigsawConfig,
        "jigsaw puzzle: which of a fixed set of permutations shuffled the image's tiles",
        head="image_classification", check=vision.check_jigsaw, recognises=vision.made_by_jigsaw, title="jigsaw puzzle",
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


def auxiliary_objective(choice: str, modality: Modality, causal: bool = False, checkpoint=None,
                        key: str = "aux_lm") -> Objective | None:
    """The objective whose auxiliary loss fine-tuning adds: ``none``, a name, or ``auto``: for text the
    objective that pretrains models like this one (causal or not), for images the objective that made
    the checkpoint (``checkpoint``: its HF config) where it lends one, else the first that lends one."""
    lenders = [o for o in registered().values() if o.modality == modality and o.aux]
    if choice == "none":
        return None
    if choice == "auto" and modality == "text":
        return next(o for o in lenders if o.causal == causal)
    if choice == "auto":
        made = [o for o in lenders if checkpoint is not None and o.recognises and o.recognises(checkpoint)]
        return (made or lenders)[0]
    objective = find_objective(choice, modality)
    if objective.aux is None:
        raise ConfigError(f"{key} {choice!r} lends no auxiliary loss; choose one of {aux_choices(modality)}")
    return objective


def aux_choices(modality: Modality) -> list[str]:
    return ["none", "auto", *names(modality, aux=True)]


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
