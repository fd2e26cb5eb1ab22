"""What the project knows about each architecture, in one table keyed by ``config.model_type``.

An entry says how to build the model from a size preset (its config class, the config fields that
hold layers, hidden size and heads, its other preset fields, its head classes), where a masked LM
keeps its encoder and MLM head, whether the model reads left to right, how its parameters are named
(transformer block, embeddings: for layer-wise lr decay), which parameters are looked up rather than
multiplied, and what a position is (a token, or an image patch plus [CLS]). The builders, the tasks,
layer decay and MFU all read it, so a new architecture is one entry here plus tests. As in nanoGPT
(``configure_optimizers``, ``estimate_mfu``), the functions that use these facts live beside them:
:func:`optimizer_groups` and :func:`training_flops`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

#: Block-index patterns: the first group is the block number in a parameter's name.
_ENCODER_LAYER = r"(?:^|\.)encoder\.layer\.(\d+)\."
_LAYERS = r"(?:^|\.)layers\.(\d+)\."
_H = r"(?:^|\.)h\.(\d+)\."
_EMBEDDINGS = r"(?:^|\.)embeddings\."


def _no_extras(layers: int, hidden: int, heads: int) -> dict:
    return {}


def _ffn(factor: int, name: str = "intermediate_size") -> Callable[[int, int, int], dict]:
    """A feed-forward width of ``factor`` × hidden, under the config's own field name."""
    return lambda layers, hidden, heads: {name: factor * hidden}


@dataclass(frozen=True)
class Architecture:
    model_type: str
    config_class: str
    #: Head name (``masked_lm``, ``causal_lm``...) -> transformers class.
    head_classes: Mapping[str, str] = field(default_factory=dict)
    #: Config fields of (layers, hidden size, attention heads): the size presets set them, FLOPs read them.
    layers: str = "num_hidden_layers"
    hidden: str = "hidden_size"
    heads: str = "num_attention_heads"
    #: Preset fields beyond those three, from (layers, hidden, heads).
    preset_extras: Callable[[int, int, int], dict] = _no_extras
    #: Trained left to right: its auxiliary LM loss is next-token prediction, pairs use GPT-1's layout.
    causal: bool = False
    #: A masked LM's encoder, and the modules that in turn map hidden states to vocabulary logits.
    mlm_encoder: str | None = None
    mlm_head: tuple[str, ...] = ()
    #: Parameter-name patterns: transformer block (group 1 is its index), and embeddings.
    block: str = r"\.(\d+)\."
    embeddings: str = r"emb|\bwte\b|\bwpe\b|cls_token|mask_token"
    #: Parameters added or looked up, not multiplied, beyond ``nn.Embedding`` tables (no FLOPs).
    lookups: str | None = None
    #: A position is a token, or an image patch (with one [CLS] position per image).
    inputs: Literal["tokens", "patches"] = "tokens"

    def dims(self, config) -> tuple[int, int, int]:
        """(layers, hidden size, attention heads) of ``config``."""
        return tuple(int(getattr(config, name, 0) or 0) for name in (self.layers, self.hidden, self.heads))

    def preset(self, layers: int, hidden: int, heads: int) -> dict:
        """The config fields of a model with these dimensions."""
        return {self.layers: layers, self.hidden: hidden, self.heads: heads, **self.preset_extras(layers, hidden, heads)}

    def positions(self, config, batch: Mapping[str, torch.Tensor]) -> tuple[int, int]:
        """(positions the encoder computes in ``batch``, sequence length): attended tokens, or
        patches plus [CLS] per image."""
        if self.inputs == "patches":
            pixels = batch["pixel_values"]
            per_image = (pixels.shape[-2] // config.patch_size) * (pixels.shape[-1] // config.patch_size) + 1
            return pixels.shape[0] * per_image, per_image
        ids = batch.get("input_ids")
        if ids is None:
            return 0, 0
        mask = batch.get("attention_mask")
        return (int(mask.sum()) if mask is not None else ids.numel()), ids.shape[-1]


ARCHITECTURES: dict[str, Architecture] = {
    arch.model_type: arch
    for arch in (
        Architecture(
            "bert", "BertConfig",
            {"masked_lm": "BertForMaskedLM", "pretraining": "BertForPreTraining",
             "sequence_classification": "BertForSequenceClassification"},
            preset_extras=_ffn(4), mlm_encoder="bert", block=_ENCODER_LAYER, embeddings=_EMBEDDINGS,
            # BertLMPredictionHead's forward is transform then decoder: split so the chunked projection applies.
            mlm_head=("cls.predictions.transform", "cls.predictions.decoder"),
        ),
        Architecture(
            # Pre-LN with rotary positions and a gated MLP: it leaves the unigram plateau far sooner than
            # post-LN BERT at these sizes. Global attention in every layer (sequences here are short),
            # and mean pooling for classification, which MLM trains (it never trains [CLS]).
            "modernbert", "ModernBertConfig",
            {"masked_lm": "ModernBertForMaskedLM", "sequence_classification": "ModernBertForSequenceClassification"},
            preset_extras=lambda layers, hidden, heads: dict(
                intermediate_size=2 * hidden, global_attn_every_n_layers=1, max_position_embeddings=512,
                classifier_pooling="mean",
            ),
            mlm_encoder="model", mlm_head=("head", "decoder"), block=_LAYERS, embeddings=_EMBEDDINGS,
        ),
        Architecture(
            "gpt2", "GPT2Config", {"causal_lm": "GPT2LMHeadModel", "sequence_classification": "GPT2ForSequenceClassification"},
            layers="n_layer", hidden="n_embd", heads="n_head", preset_extras=_ffn(4, "n_inner"), causal=True,
            block=_H, embeddings=r"(?:^|\.)(?:wte|wpe)\.",
        ),
        Architecture(
            "xlm", "XLMConfig",
            {"masked_lm": "XLMWithLMHeadModel", "causal_lm": "XLMWithLMHeadModel",
             "sequence_classification": "XLMForSequenceClassification"},
            layers="n_layers", hidden="emb_dim", heads="n_heads", mlm_encoder="transformer", mlm_head=("pred_layer.proj",),
            block=r"(?:^|\.)(?:attentions|layer_norm1|ffns|layer_norm2)\.(\d+)\.",
            embeddings=r"(?:^|\.)(?:position_embeddings|lang_embeddings|embeddings|layer_norm_emb)\.",
        ),
        Architecture(
            "vit", "ViTConfig",
            {"image_classification": "ViTForImageClassification", "masked_image_modeling": "ViTForMaskedImageModeling"},
            preset_extras=_ffn(4), block=_LAYERS, embeddings=_EMBEDDINGS,
            lookups=r"embeddings\.(?:cls_token|mask_token|position_embeddings)$", inputs="patches",
        ),
        # Families loaded from checkpoints (fine-tuning, the auxiliary LM loss); presets for tests.
        Architecture(
            "roberta", "RobertaConfig",
            {"masked_lm": "RobertaForMaskedLM", "sequence_classification": "RobertaForSequenceClassification"},
            preset_extras=_ffn(4), mlm_encoder="roberta", mlm_head=("lm_head",), block=_ENCODER_LAYER, embeddings=_EMBEDDINGS,
        ),
        Architecture(
            "xlm-roberta", "XLMRobertaConfig",
            {"masked_lm": "XLMRobertaForMaskedLM", "sequence_classification": "XLMRobertaForSequenceClassification"},
            preset_extras=_ffn(4), mlm_encoder="roberta", mlm_head=("lm_head",), block=_ENCODER_LAYER, embeddings=_EMBEDDINGS,
        ),
        Architecture(
            "openai-gpt", "OpenAIGPTConfig",
            {"causal_lm": "OpenAIGPTLMHeadModel", "sequence_classification": "OpenAIGPTForSequenceClassification"},
            layers="n_layer", hidden="n_embd", heads="n_head", causal=True, block=_H,
            embeddings=r"(?:^|\.)(?:tokens_embed|positions_embed)\.",
        ),
        Architecture(
            "gpt_neo", "GPTNeoConfig",
            {"causal_lm": "GPTNeoForCausalLM", "sequence_classification": "GPTNeoForSequenceClassification"},
            layers="num_layers", heads="num_heads", causal=True, block=_H, embeddings=r"(?:^|\.)(?:wte|wpe)\.",
            preset_extras=lambda layers, hidden, heads: {"attention_types": [[["global"], layers]]},
        ),
        Architecture(
            "gptj", "GPTJConfig", {"causal_lm": "GPTJForCausalLM", "sequence_classification": "GPTJForSequenceClassification"},
            layers="n_layer", hidden="n_embd", heads="n_head", causal=True, block=_H, embeddings=r"(?:^|\.)wte\.",
            preset_extras=lambda layers, hidden, heads: {"rotary_dim": hidden // heads},
        ),
        *(
            Architecture(
                model_type, f"{prefix}Config",
                {"causal_lm": f"{prefix}ForCausalLM", "sequence_classification": f"{prefix}ForSequenceClassification"},
                causal=True, block=_LAYERS, embeddings=r"(?:^|\.)embed_tokens\.",
                preset_extras=lambda layers, hidden, heads: {"intermediate_size": 4 * hidden, "num_key_value_heads": heads},
            )
            for model_type, prefix in (("llama", "Llama"), ("mistral", "Mistral"), ("qwen2", "Qwen2"))
        ),
    )
}


def architecture_of(config) -> Architecture:
    """The table's entry for ``config.model_type``; for another type, generic naming rules and the
    standard HF config field names."""
    model_type = getattr(config, "model_type", "")
    return ARCHITECTURES.get(model_type) or Architecture(model_type, type(config).__name__)


def is_causal(config) -> bool:
    """Trained left to right: a causal family, a decoder, or XLM with ``causal=True``."""
    return architecture_of(config).causal or bool(getattr(config, "is_decoder", False)) or bool(getattr(config, "causal", False))


def mlm_parts(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(encoder, MLM head) of a masked LM whose layout the table knows, else None."""
    arch = architecture_of(model.config)
    if arch.mlm_encoder is None:
        return None
    try:
        heads = [model.get_submodule(path) for path in arch.mlm_head]
    except AttributeError:  # e.g. XLM with an adaptive softmax: no plain output projection
        return None
    return model.get_submodule(arch.mlm_encoder), heads[0] if len(heads) == 1 else nn.Sequential(*heads)


# ---------------------------------------------------------------------------- layer decay


def block_depths(names: list[str], config=None) -> dict[str, int]:
    """Each parameter's depth for layer-wise lr decay: 0 for embeddings, i + 1 for transformer block
    i (by the architecture's block pattern: ``encoder.layer.3.``, ``layers.3.``, ``h.3.``), and
    n + 1 for what follows the n blocks (final norm, pooler, heads)."""
    arch = architecture_of(config)
    block_re, embedding_re = re.compile(arch.block), re.compile(arch.embeddings)
    block = {name: block_re.search(name) for name in names}
    n = max((int(m.group(1)) + 1 for m in block.values() if m), default=0)
    return {name: int(m.group(1)) + 1 if m else 0 if embedding_re.search(name) else n + 1 for name, m in block.items()}


def optimizer_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], config, learning_rate: float, weight_decay: float,
    layer_decay: float = 1.0,
) -> list[dict]:
    """AdamW parameter groups, as nanoGPT's ``configure_optimizers``: no weight decay on biases and
    norms; with ``layer_decay`` < 1, block i of n learns at ``layer_decay ** (n - i)`` of the rate and
    the embeddings at ``layer_decay ** (n + 1)`` (BEiT, MAE)."""
    named = [(name, param) for name, param in named_parameters if param.requires_grad]
    names = [name for name, _ in named]
    depth = block_depths(names, config) if layer_decay != 1.0 else dict.fromkeys(names, 0)
    top = max(depth.values(), default=0)
    groups: dict[tuple[bool, int], dict] = {}
    for name, param in named:
        decays = not (param.ndim < 2 or "norm" in name.lower())
        key = (decays, depth[name])
        if key not in groups:
            groups[key] = {
                "params": [], "weight_decay": weight_decay if decays else 0.0,
                "lr": learning_rate * layer_decay ** (top - depth[name]),
            }
        groups[key]["params"].append(param)
    return list(groups.values())


# ---------------------------------------------------------------------------- FLOPs


def flops_per_position(config, matmul_params: int, seq_len: int) -> float:
    """nanoGPT's estimate for a forward and backward pass: 6N + 12·L·H·Q·T FLOPs per position, for
    N multiplied parameters, L layers, H heads of width Q, and T positions attended."""
    layers, hidden, heads = architecture_of(config).dims(config)
    return 6 * matmul_params + 12 * layers * heads * (hidden // max(heads, 1)) * seq_len


def lookup_parameters(model: nn.Module) -> set[int]:
    """Ids of parameters read by index or added (embedding tables, ViT's [CLS] and positions): they
    cost no FLOPs. An embedding tied to the output projection is multiplied there, so it counts."""
    arch = architecture_of(model.config)
    ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    if arch.lookups:
        pattern = re.compile(arch.lookups)
        ids |= {id(p) for name, p in model.named_parameters() if pattern.search(name)}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and getattr(output, "weight", None) is not None:
        ids.discard(id(output.weight))
    return ids


def training_flops(
    model: nn.Module, parameters: Iterable[nn.Parameter], batch: Mapping[str, torch.Tensor],
    heads: Iterable[tuple[nn.Module, int]] = (),
) -> float:
    """FLOPs of a training step (forward and backward) on ``batch``.

    Every multiplied parameter in ``parameters`` runs at every position the encoder computes
    (:meth:`Architecture.positions`), except those of ``heads``: ``(module, positions)`` pairs for
    parts that run at fewer positions, such as a sparse MLM head at the masked tokens only.
    """
    heads = list(heads)
    positions, seq_len = architecture_of(model.config).positions(model.config, batch)
    in_heads = {id(p) for module, _ in heads for p in module.parameters()}
    skip = lookup_parameters(model) | in_heads
    body = sum(p.numel() for p in {id(p): p for p in parameters}.values() if id(p) not in skip)
    head_flops = sum(6 * count * sum(p.numel() for p in module.parameters()) for module, count in heads)
    return positions * flops_per_position(model.config, body, seq_len) + head_flops
