"""The model of a pretraining run: a preset with fresh weights, or a checkpoint to continue from.

Continuing a checkpoint (domain- or task-adaptive pretraining) differs from a fresh model in three
ways. Its tokenizer must fit its embedding matrix, or ids would index the wrong rows (or none).
It may lack the pretraining head: a sentence encoder such as all-MiniLM-L6-v2 is saved as a bare
``BertModel``; the head is then created, its output projection tied to the input embeddings where
the architecture ties them, and one log line says which weights are new (transformers reports this
in a long table that also calls such a checkpoint "corrupted"). And a from-scratch learning rate
overwrites what the checkpoint learned, so one is warned about.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers.utils import logging as hf_logging

from nlp_ssl.errors import ConfigError
from nlp_ssl.models.architectures import is_causal
from nlp_ssl.models.builders import Head, ModelConfig, build_model, loads_checkpoint, resolve_model_path

logger = logging.getLogger("nlp_ssl.models")

#: Above this, a learning rate is a from-scratch one (the recipes' 1e-3 to 2e-3); continued
#: pretraining uses 1e-4 or less (Gururangan et al., 2020; BERT's own 1e-4; this house's MLM config 3e-5).
CONTINUED_MAX_LR = 5e-4


def build_pretraining_model(cfg: ModelConfig, head: Head, tokenizer, *, learning_rate: float | None = None,
                            **fresh_fields):
    """The model for ``head`` that trains on ``tokenizer``'s ids.

    A fresh model (preset, config folder, or ``load_weights=false``) gets ``vocab_size`` from the
    tokenizer and ``fresh_fields`` (special-token ids). A loaded checkpoint keeps its own config; its
    vocabulary is checked against the tokenizer and a missing head is created and reported.
    """
    if cfg.name_or_path:
        check_checkpoint_kind(cfg.name_or_path, head)
    if not loads_checkpoint(cfg):
        return build_model(cfg, head, vocab_size=len(tokenizer), **fresh_fields)
    info: dict = {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report is summarised in one line below
    try:
        model = build_model(cfg, head, loading_info=info)
    except OSError as error:  # not a local folder and not reachable on the Hub
        raise ConfigError(f"model.name_or_path {cfg.name_or_path}: cannot load it ({str(error).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    check_vocabulary(tokenizer, model, resolve_model_path(cfg.name_or_path))
    tied = tie_output_embeddings(model)
    logger.info("%s", describe_loading(cfg.name_or_path, head, info, tied, model))
    if learning_rate is not None and learning_rate > CONTINUED_MAX_LR:
        logger.warning(
            "learning_rate %g is a from-scratch rate and can erase what %s learned; continued pretraining "
            "uses 1e-4 or less (--config recipes/configs/<recipe>_continue.yaml)", learning_rate, cfg.name_or_path,
        )
    return model


def check_checkpoint_kind(name: str, head: Head) -> None:
    """One line when the checkpoint is of the other kind of language model: a decoder given masked-LM
    pretraining (transformers would answer with the list of every masked-LM config it knows), or an
    encoder given causal-LM pretraining (BERT would load as a "causal" LM that still sees every
    token, and train to copy the next one)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(name))
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0][:200]
        raise ConfigError(f"model.name_or_path {name}: not a model folder or Hub model ({reason})") from None
    if head in ("masked_lm", "pretraining") and is_causal(config):
        raise ConfigError(f"model.name_or_path {name}: checkpoint is a causal LM ({config.model_type}); masked-LM "
                          f"pretraining needs a masked-LM or encoder checkpoint")
    if head == "causal_lm" and not is_causal(config) and config.model_type != "xlm":  # XLM's config says which it is
        raise ConfigError(f"model.name_or_path {name}: checkpoint is a masked LM or encoder ({config.model_type}); "
                          f"causal-LM pretraining needs a causal-LM (decoder) checkpoint")


def is_own_tokenizer(tokenizer, checkpoint: str) -> bool:
    """Whether ``tokenizer`` was loaded from the checkpoint itself (same folder or Hub name)."""
    source = str(getattr(tokenizer, "name_or_path", "") or "")
    if source == checkpoint:
        return True
    return bool(source) and Path(source).exists() and Path(source).resolve() == Path(checkpoint).resolve()


def check_vocabulary(tokenizer, model, checkpoint: str, key: str = "tokenizer.name_or_path") -> None:
    """One line (exit 2) when the tokenizer's ids do not address the checkpoint's embedding rows.

    A tokenizer other than the checkpoint's own must have its very vocabulary (a copy), else its ids
    mean other tokens (checked whatever its size: a vocabulary of the same size passes every shape
    check and trains on scrambled embeddings). Without a saved tokenizer to compare with, its size
    must equal the rows, except that the checkpoint's own tokenizer may have fewer tokens than rows
    (ModernBERT and others pad the matrix to a multiple of 64).
    """
    rows = model.get_input_embeddings().num_embeddings
    size = len(tokenizer)
    source = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    by_path = is_own_tokenizer(tokenizer, checkpoint)
    saved = None if by_path else _saved_tokenizer(checkpoint)
    other = _first_difference(saved.get_vocab(), tokenizer.get_vocab()) if saved is not None else None
    own = by_path or (saved is not None and other is None)  # the checkpoint's, or a copy of it
    if not (size == rows or (size < rows and own)):
        raise ConfigError(
            f"tokenizer {source} has {size:,} tokens but model.name_or_path {checkpoint} has {rows:,} embedding rows: "
            f"its ids would address the wrong embeddings; leave {key} unset to use the checkpoint's own"
        )
    if other:
        raise ConfigError(
            f"{key} {source} is not the tokenizer of model.name_or_path {checkpoint}: {other}, so its ids "
            f"would address other tokens' embeddings; leave {key} unset to use the checkpoint's own"
        )


def _saved_tokenizer(checkpoint: str):
    """The tokenizer saved with the checkpoint, or None."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(checkpoint)
    except (OSError, ValueError, TypeError):
        return None


def _first_difference(own: dict[str, int], given: dict[str, int]) -> str | None:
    """How ``given`` differs from ``own`` (token → id), in words; None when they are the same."""
    if own == given:
        return None
    moved = [t for t in own if t in given and given[t] != own[t]]
    if moved:
        token = min(moved, key=own.get)
        return (f"{len(moved):,} of its {len(given):,} tokens have other ids ({token!r} is {given[token]} in it, "
                f"{own[token]} in the checkpoint's)")
    extra = sorted(set(given) - set(own), key=given.get)
    missing = sorted(set(own) - set(given), key=own.get)
    parts = ([f"has {len(extra):,} tokens the checkpoint's lacks (e.g. {extra[0]!r})"] if extra else []) + (
        [f"lacks {len(missing):,} of the checkpoint's (e.g. {missing[0]!r})"] if missing else [])
    return "it " + " and ".join(parts)


def tie_output_embeddings(model) -> bool | None:
    """Tie the output projection to the input embeddings where the config ties them; whether they are
    tied (None: the model has no output projection)."""
    output = model.get_output_embeddings()
    if output is None:
        return None
    embeddings = model.get_input_embeddings()
    if getattr(model.config, "tie_word_embeddings", False) and output.weight.data_ptr() != embeddings.weight.data_ptr():
        output.weight = embeddings.weight
    return output.weight.data_ptr() == embeddings.weight.data_ptr()


def describe_loading(checkpoint: str, head: str, info: dict, tied: bool | None, model) -> str:
    """One line: the weights the checkpoint lacked (newly initialised), how the projection is shared,
    and what of the checkpoint this head does not use."""
    missing = sorted(info.get("missing_keys") or [])
    unused = sorted(info.get("unexpected_keys") or [])
    projection = ""
    if tied is not None:
        name = next((n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight), "input embeddings")
        projection = (f"; its output projection is tied to the input embeddings ({name})" if tied
                      else "; its output projection is not tied to the input embeddings (the config unties them)")
    if missing:
        line = (f"model.name_or_path {checkpoint}: no complete {head} head in the checkpoint; newly initialised: "
                f"{', '.join(missing)}{projection}")
    else:
        line = f"model.name_or_path {checkpoint}: loaded with its own {head} head{projection}"
    if unused:
        line += f"; not used (and not saved) by this head: {', '.join(unused)}"
    return line
