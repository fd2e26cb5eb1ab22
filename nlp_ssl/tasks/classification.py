"""Sequence classification, optionally with an auxiliary language-modelling loss (GPT-1 §3.2).

``L = L_cls + λ·L_lm``. The classification loss is the cross-entropy of the plain HF
``*ForSequenceClassification`` model on the unmasked input, so without an auxiliary loss (or with
λ = 0) the task is ordinary fine-tuning and no LM head exists at all (DDP then sees no unused
parameter). The auxiliary loss is whatever the objective's registry entry lends
(:mod:`nlp_ssl.tasks.auxiliary`): the causal LM's next-token loss reads this pass's hidden states,
the masked LM's runs the encoder again on a masked copy.

Losses are sums with counts (see :mod:`nlp_ssl.tasks.base`): ``cls`` counts labelled examples,
the auxiliary loss its predicted tokens; the trainer weighs them by ``{"cls": 1, "lm": λ}``.
With ``regression=True`` the head has one output and ``cls`` is the summed squared error (MSE).

Sentence pairs are laid out by :func:`tokenize_texts` as each family expects: the tokenizer's own
pair template for BERT (``[CLS] a [SEP] b [SEP]``, segment ids 0/1), ModernBERT and XLM
(``</s> a </s> b </s>``), and GPT-1 §3.3's ``<|start|> a <|delim|> b <|extract|>`` for causal
models (:func:`prepare_pair_layout`), whose classifier reads the last, *extract*, token.
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_ssl.errors import ConfigError
from nlp_ssl.models.architectures import is_causal
from nlp_ssl.tasks.auxiliary import AuxiliaryLoss
from nlp_ssl.tasks.base import Sums, Task, cross_entropy_sum

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


class SequenceClassificationTask(Task):
    """Cross-entropy over ``labels`` (class ids) + ``aux_weight`` × an auxiliary loss (``aux``).

    Batch keys: the model inputs, ``labels``, and the auxiliary loss's own keys. Metrics:
    ``accuracy`` (or ``mse``), and ``<aux name>_accuracy`` with an auxiliary loss.
    """

    def __init__(self, model: nn.Module, aux: AuxiliaryLoss | None = None, aux_weight: float = 0.5,
                 regression: bool = False):
        super().__init__(model)
        self.regression = regression
        if regression and model.config.num_labels != 1:
            raise ConfigError(f"regression needs a one-output head, the model has num_labels={model.config.num_labels}")
        if aux_weight < 0:
            raise ConfigError(f"aux_weight must be >= 0, got {aux_weight}")
        self.aux = aux if aux_weight > 0 else None
        self.aux_weight = float(aux_weight) if self.aux is not None else 0.0
        self.loss_weights = {"cls": 1.0} if self.aux is None else {"cls": 1.0, self.aux.name: self.aux_weight}

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        counts = {"cls": torch.as_tensor(labels.numel()) if self.regression else (labels != -100).sum()}
        if self.aux is not None:
            counts[self.aux.name] = self.aux.count_items(batch)
        return counts

    def forward(self, labels: torch.Tensor, **batch) -> dict[str, Sums]:
        inputs = {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}
        captured = []
        hook = None
        if self.aux is not None and self.aux.reads_task_pass:
            # The encoder's last hidden states of this very pass feed the auxiliary loss: no second pass.
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
        if self.aux is None:
            return out
        aux_loss, aux_count, aux_correct = self.aux(self.model, batch, captured[0] if captured else None)
        out["losses"][self.aux.name] = (aux_loss, aux_count)
        if aux_correct is not None:
            out["metrics"][f"{self.aux.name}_accuracy"] = (aux_correct, aux_count)
        return out
