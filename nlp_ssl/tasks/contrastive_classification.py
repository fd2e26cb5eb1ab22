"""Contrastive few-label fine-tuning: the classifier's cross-entropy plus a contrastive loss that pulls
examples of one class together, on the features the classifier reads.

``L = L_cls + w·L_contrastive (+ λ·L_aux)``. Batches are :class:`~nlp_ssl.objectives.label_pairs.PartnerCollator`'s:
b labelled examples, then b partners (row ``b + i`` partners row ``i``). Two losses:

- ``supcon``: supervised contrastive (Khosla et al., 2020) with the shared InfoNCE of
  :mod:`nlp_ssl.tasks.contrastive`: every row of the micro-batch of the same class is a positive,
  every other row a negative; items are the rows that have a positive.
- ``cosine``: SetFit's pair loss (Tunstall et al., 2022): ``(cos(u_i, v_i) - [same class])²`` for
  each example and its partner; items are the pairs.

The features are those of the classifier's output layer (``pooling="head"``: for BERT the pooled
[CLS], for ModernBERT its head's output, for GPT-2 the last token's state), so the saved classifier
reads exactly what was pulled together; or the masked mean of the last hidden states (``"mean"``,
the sentence embedding that sentence-transformers trains). The model stays a plain
``*ForSequenceClassification``: the loss adds no parameter.

Under N processes the supervised-contrastive negatives are each process's own micro-batch: the shared
gather keeps groups of different processes apart, which would make a same-class row of another
process a negative. Gradient accumulation does not widen the batch either; the step averages over
the items of all its micro-batches, as the Task contract says.
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_ssl.errors import ConfigError
from nlp_ssl.tasks.auxiliary import AuxiliaryLoss
from nlp_ssl.tasks.base import Sums
from nlp_ssl.tasks.classification import SequenceClassificationTask
from nlp_ssl.tasks.contrastive import anchors_in, info_nce
from nlp_ssl.tasks.sentence_embedding import pool

LOSSES = ("supcon", "cosine")
POOLINGS = ("head", "mean")


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The output layer of a ``*ForSequenceClassification``: its last Linear with ``num_labels`` outputs."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == model.config.num_labels]
    if not found:
        raise ConfigError(f"{type(model).__name__}: no output layer with {model.config.num_labels} outputs")
    return found[-1]


def last_token(features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(rows, d): each row's features at its last attended position (right padding)."""
    last = attention_mask.sum(1).long() - 1
    return features[torch.arange(features.shape[0], device=features.device), last]


def cosine_pair_sums(features: torch.Tensor, groups: torch.Tensor, partner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over pairs of (cos - same)², pairs); row ``b + i`` partners row ``i``."""
    b = int((~partner).sum())
    cos = nn.functional.cosine_similarity(features[:b].float(), features[b:].float(), dim=-1)
    same = (groups[:b] == groups[b:]).to(cos.dtype)
    return ((cos - same) ** 2).sum(), torch.as_tensor(b, device=features.device)


class ContrastiveClassificationTask(SequenceClassificationTask):
    """Cross-entropy on the examples, ``weight`` × a contrastive loss (``loss``) on the features of
    examples and partners, and the auxiliary loss if one runs. Metrics as plain fine-tuning's."""

    def __init__(self, model: nn.Module, loss: str = "supcon", weight: float = 1.0, temperature: float = 0.1,
                 pooling: str = "head", aux: AuxiliaryLoss | None = None, aux_weight: float = 0.5):
        super().__init__(model, aux, aux_weight)
        if loss not in LOSSES:
            raise ConfigError(f"contrastive loss {loss!r} is not one of {list(LOSSES)}")
        if pooling not in POOLINGS:
            raise ConfigError(f"contrastive pooling {pooling!r} is not one of {list(POOLINGS)}")
        if weight <= 0 or temperature <= 0:
            raise ConfigError(f"contrastive weight ({weight}) and temperature ({temperature}) must be > 0")
        self.loss, self.pooling, self.temperature = loss, pooling, float(temperature)
        self.head = classifier_layer(model)
        self.loss_weights = {**self.loss_weights, "contrastive": float(weight)}

    def count_items(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        counts = super().count_items(batch)
        counts["contrastive"] = anchors_in(batch["groups"]) if self.loss == "supcon" else batch["partner"].sum()
        return counts

    def forward(self, labels: torch.Tensor, groups: torch.Tensor, partner: torch.Tensor, **batch) -> dict[str, Sums]:
        captured: list[torch.Tensor] = []
        if self.pooling == "head":
            hook = self.head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        else:
            hook = self.model.base_model.register_forward_hook(lambda _m, _i, out: captured.append(out[0]))
        try:
            out = super().forward(labels=labels, **batch)
        finally:
            hook.remove()
        features = captured[0]
        if self.pooling == "mean":
            features = pool(features, batch["attention_mask"], "mean")
        elif features.ndim == 3:  # a causal model's head scores every position and reads the last real token
            features = last_token(features, batch["attention_mask"])
        if self.loss == "supcon":
            sums = info_nce(features, groups, self.temperature, gather=False)
            out["losses"]["contrastive"] = (sums.loss, sums.anchors)
        else:
            out["losses"]["contrastive"] = cosine_pair_sums(features, groups, partner)
        return out
