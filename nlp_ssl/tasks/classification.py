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

Inputs (single texts or pairs) are laid out by :mod:`nlp_ssl.text.pairs`.
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_ssl.errors import ConfigError
from nlp_ssl.tasks.auxiliary import AuxiliaryLoss, attach_auxiliary
from nlp_ssl.tasks.base import Sums, Task, cross_entropy_sum

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
        attach_auxiliary(self, aux, aux_weight)

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
