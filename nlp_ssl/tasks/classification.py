"""Sequence classification, optionally with an auxiliary language-modelling loss (GPT-1 §3.2).

``L = L_cls + λ·L_lm``. The classification loss is the cross-entropy of the plain HF
``*ForSequenceClassification`` model on the unmasked input, so with ``aux_lm="none"`` (or λ = 0) the
task is ordinary fine-tuning and no LM head exists at all (DDP then sees no unused parameter).

* ``aux_lm="clm"`` (GPT): next-token loss on the same input tokens, from the hidden states of the
  classification pass (one forward pass), projected by the pretrained LM head, which for GPT-2 is
  the input embedding matrix (``lm_head`` tied to ``wte``). Only the ``score`` head is new.
* ``aux_lm="mlm"`` (BERT, XLM): masked LM on a masked copy of the input (``lm_input_ids``, written by
  :class:`ClassificationCollator` below). The classifier must see the
  unmasked text, so the encoder runs a second time on the masked copy; the MLM head is the
  checkpoint's own (see :func:`pretrained_lm_head`), its decoder tied to the classifier's embeddings.

Losses are sums with counts (see :mod:`nlp_ssl.tasks.base`): ``cls`` counts labelled examples,
``lm`` counts predicted tokens; the trainer weighs them by ``loss_weights = {"cls": 1, "lm": λ}``.
With ``regression=True`` the head has one output and ``cls`` is the summed squared error (MSE).

Sentence pairs are laid out by :func:`tokenize_texts` as each family expects: the tokenizer's own
pair template for BERT (``[CLS] a [SEP] b [SEP]``, segment ids 0/1), ModernBERT and XLM
(``</s> a </s> b </s>``), and GPT-1 §3.3's ``<|start|> a <|delim|> b <|extract|>`` for causal
models (:func:`prepare_pair_layout`), whose classifier reads the last, *extract*, token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nlp_ssl.errors import ConfigError, DataError
from nlp_ssl.models.architectures import ARCHITECTURES, is_causal, mlm_parts
from nlp_ssl.objectives.masking import attention_mask_from_lengths, pad_column
from nlp_ssl.objectives.mlm import MLMCollator
from nlp_ssl.tasks.base import Sums, Task, cross_entropy_sum
from nlp_ssl.tasks.masked_lm import masked_positions_loss

AUX_LM = ("none", "clm", "mlm")
#: GPT-1 §3.3's tokens around a (pair of) text(s) for a causal model: start, delimiter, extract.
GPT1_TOKENS = ("<|start|>", "<|delim|>", "<|extract|>")


def prepare_pair_layout(tokenizer, config) -> bool:
    """Give a causal model's tokenizer GPT-1's input layout; True when tokens were added.

    ``<|start|> a <|extract|>`` and ``<|start|> a <|delim|> b <|extract|>``, as a post-processor
    template saved in ``tokenizer.json``, so ``pipeline("text-classification")`` on the saved folder
    lays out ``{"text": a, "text_pair": b}`` the same way. The extract token is not the pad token, so
    GPT-2's classifier (which reads the last non-pad token) reads it. Encoders keep their tokenizer's
    own template (``[CLS] a [SEP] b [SEP]``).
    """
    if not is_causal(config):
        return False
    from tokenizers import processors

    before = len(tokenizer)
    missing = [t for t in GPT1_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    start, delim, extract = GPT1_TOKENS
    template = processors.TemplateProcessing(
        single=f"{start} $A {extract}", pair=f"{start} $A {delim} $B:1 {extract}:1",
        special_tokens=[(t, tokenizer.convert_tokens_to_ids(t)) for t in GPT1_TOKENS],
    )
    backend = tokenizer.backend_tokenizer
    current = backend.post_processor
    keep = [current] if isinstance(current, processors.ByteLevel) else []
    backend.post_processor = processors.Sequence([*keep, template])
    return len(tokenizer) > before


def tokenize_texts(tokenizer, texts, pairs=None, max_length: int = 128) -> dict:
    """The tokenizer's own layout of single texts or pairs; a pair too long loses tokens from its
    longer side first (``truncation="longest_first"``), so neither sentence is dropped whole."""
    return tokenizer(texts, pairs, truncation="longest_first" if pairs is not None else True, max_length=max_length)


#: Keys of a batch that the classifier takes.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "langs", "position_ids")


class TiedLMHead(nn.Module):
    """Logits = hidden · Eᵀ with the classifier's own input embeddings E (GPT-2's tied ``lm_head``).

    Holds no parameter: it reads the embedding matrix through the classifier at call time, so the
    weight is shared, not copied, and the optimizer and DDP see it once.
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self._classifier = [classifier]  # a list, so that nn.Module does not register it twice

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(hidden, self._classifier[0].get_input_embeddings().weight)


def pretrained_lm_head(classifier: nn.Module, lm_model: nn.Module, aux_lm: str) -> nn.Module:
    """The LM head the auxiliary loss needs, taken from ``lm_model`` (the same checkpoint loaded with
    its LM head, e.g. ``AutoModelForMaskedLM``), with its output projection tied to ``classifier``'s
    input embeddings when the config ties them, so only the head's other parts are extra parameters.
    """
    tied = getattr(lm_model.config, "tie_word_embeddings", True)
    if aux_lm == "clm":
        output = lm_model.get_output_embeddings()
        if tied and getattr(output, "bias", None) is None:
            return TiedLMHead(classifier)
        if tied:
            output.weight = classifier.get_input_embeddings().weight
        return output
    if aux_lm != "mlm":
        raise ConfigError(f"aux_lm {aux_lm!r} needs no LM head; choose one of {list(AUX_LM)}")
    parts = mlm_parts(lm_model)
    if parts is None:
        known = sorted(t for t, a in ARCHITECTURES.items() if a.mlm_encoder)
        raise ConfigError(f"aux_lm 'mlm': no known MLM head for model type {lm_model.config.model_type!r}; supported: {known}")
    if tied:
        lm_model.get_output_embeddings().weight = classifier.get_input_embeddings().weight
    return parts[1]


class SequenceClassificationTask(Task):
    """Cross-entropy over ``labels`` (class ids) + ``aux_weight`` × an auxiliary LM loss.

    Batch keys: the model inputs, ``labels``; for ``clm`` also ``lm_labels`` (unshifted token ids,
    -100 where not predicted); for ``mlm`` also ``lm_input_ids`` (the masked copy) and ``lm_labels``
    (-100 except at masked positions). ``lm_head`` maps hidden states to vocabulary logits; for
    ``clm`` it defaults to the tied input embeddings, for ``mlm`` it is required.
    Metrics: ``accuracy`` (and ``lm_accuracy`` with an auxiliary loss).
    """

    def __init__(self, model: nn.Module, aux_lm: str = "none", aux_weight: float = 0.5, lm_head: nn.Module | None = None,
                 regression: bool = False):
        super().__init__(model)
        self.regression = regression
        if regression and model.config.num_labels != 1:
            raise ConfigError(f"regression needs a one-output head, the model has num_labels={model.config.num_labels}")
        if aux_lm not in AUX_LM:
            raise ConfigError(f"aux_lm {aux_lm!r} is not one of {list(AUX_LM)}")
        if aux_weight < 0:
            raise ConfigError(f"aux_weight must be >= 0, got {aux_weight}")
        self.aux_lm = aux_lm if aux_weight > 0 else "none"
        self.aux_weight = float(aux_weight) if self.aux_lm != "none" else 0.0
        self.loss_weights = {"cls": 1.0}
        self.lm_head = None
        if self.aux_lm == "none":
            return
        if self.aux_lm == "clm":
            if not is_causal(model.config):
                model_type = model.config.model_type
                raise ConfigError(f"aux_lm 'clm' needs a causal model; {model_type} is bidirectional: use aux_lm=mlm")
            lm_head = lm_head if lm_head is not None else TiedLMHead(model)
        elif lm_head is None:
            raise ConfigError("aux_lm 'mlm' needs the checkpoint's MLM head: pass lm_head=pretrained_lm_head(...)")
        self.lm_head = lm_head
        self.loss_weights = {"cls": 1.0, "lm": self.aux_weight}

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        counts = {"cls": torch.as_tensor(labels.numel()) if self.regression else (labels != -100).sum()}
        if self.aux_lm == "clm":
            counts["lm"] = (batch["lm_labels"][:, 1:] != -100).sum()
        elif self.aux_lm == "mlm":
            counts["lm"] = (batch["lm_labels"] != -100).sum()
        return counts

    def _inputs(self, batch: dict) -> dict:
        return {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}

    def forward(self, labels: torch.Tensor, lm_labels=None, lm_input_ids=None, **batch) -> dict[str, Sums]:
        inputs = self._inputs(batch)
        captured = []
        hook = None
        if self.aux_lm == "clm":
            # The encoder's last hidden states of this very pass feed the LM loss: no second pass.
            hook = self.model.base_model.register_forward_hook(lambda _m, _i, out: captured.append(out[0]))
        try:
            logits = self.model(**inputs).logits
        finally:
            if hook is not None:
                hook.remove()
        if self.regression:
            errors = logits.float().reshape(-1) - labels.float()
            loss, count = (errors * errors).sum(), torch.as_tensor(labels.numel(), device=labels.device)
            out = {"losses": {"cls": (loss, count)}, "metrics": {"mse": (loss.detach(), count)}}
        else:
            loss, count, correct = cross_entropy_sum(logits, labels)
            out = {"losses": {"cls": (loss, count)}, "metrics": {"accuracy": (correct, count)}}
        if self.aux_lm == "clm":
            hidden = captured[0]
            lm_loss, lm_count, lm_correct = masked_positions_loss(hidden[:, :-1], lm_labels[:, 1:], self.lm_head)
        elif self.aux_lm == "mlm":
            masked = {**inputs, "input_ids": lm_input_ids}
            hidden = self.model.base_model(**masked)[0]
            lm_loss, lm_count, lm_correct = masked_positions_loss(hidden, lm_labels, self.lm_head)
        else:
            return out
        out["losses"]["lm"] = (lm_loss, lm_count)
        out["metrics"]["lm_accuracy"] = (lm_correct, lm_count)
        return out


class ClassificationCollator:
    """``[{"input_ids", "label", ...}]`` -> padded ``input_ids``, ``attention_mask``, ``labels`` (+ the aux LM's keys).

    It lives beside the task because its extra keys exist only for it. ``aux_lm="clm"``: ``lm_labels``
    = the input ids, -100 at pads. ``aux_lm="mlm"``: ``lm_input_ids``/``lm_labels`` from
    :class:`~nlp_ssl.objectives.mlm.MLMCollator` on the same examples, so the masks are seeded by the
    example content like every other objective's. ``pad_token_id`` defaults to the tokenizer's.
    """

    def __init__(self, tokenizer, aux_lm: str = "none", mlm_probability: float = 0.15, seed: int = 0,
                 pad_token_id: int | None = None, label_key: str = "label", regression: bool = False):
        if aux_lm not in AUX_LM:
            raise ConfigError(f"aux_lm {aux_lm!r} is not one of {list(AUX_LM)}")
        self.pad_token_id = pad_token_id if pad_token_id is not None else tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise DataError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no pad token; set one (e.g. the EOS)")
        self.aux_lm = aux_lm
        self.label_key = label_key
        self.regression = regression
        self.mlm = MLMCollator(tokenizer, mlm_probability=mlm_probability, seed=seed) if aux_lm == "mlm" else None

    def set_epoch(self, epoch: int) -> None:
        if self.mlm is not None:
            self.mlm.set_epoch(epoch)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        ids_np, lengths = pad_column(examples, "input_ids", self.pad_token_id)
        input_ids = torch.from_numpy(ids_np)
        attention_mask = attention_mask_from_lengths(lengths, input_ids.shape[1])
        try:
            if self.regression:
                labels = torch.tensor([float(e[self.label_key]) for e in examples], dtype=torch.float32)
            else:
                labels = torch.tensor([int(e[self.label_key]) for e in examples], dtype=torch.long)
        except KeyError:
            raise DataError(f"collator: example is missing the field {self.label_key!r}") from None
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = torch.from_numpy(pad_column(examples, "token_type_ids", 0)[0])
        if self.aux_lm == "clm":
            batch["lm_labels"] = input_ids.masked_fill(attention_mask == 0, -100)
        elif self.aux_lm == "mlm":
            masked = self.mlm([{"input_ids": e["input_ids"]} for e in examples])
            batch["lm_input_ids"], batch["lm_labels"] = masked["input_ids"], masked["labels"]
        return batch
