"""The contract of an auxiliary pretext loss beside a fine-tuning task: ``L = L_task + λ·L_aux`` (GPT-1 §3.2).

An objective lends one to fine-tuning through its registry entry (``Objective.aux``): the masked LM
lends :class:`~nlp_ssl.tasks.masked_lm.MaskedLMAux`, the causal LM
:class:`~nlp_ssl.tasks.causal_lm.CausalLMAux`, RotNet and SimMIM their image heads. The fine-tuning
task (text or image classification) stays ignorant of which one runs: it asks the auxiliary loss
for its item count and its ``(sum, count, correct)``, exactly like a :class:`~nlp_ssl.tasks.base.Task`.

Its head is a submodule of the auxiliary loss, not of ``task.model``, so the saved classifier is a
plain HF model; its batch keys come from the matching collator part (``aux_*``/``lm_*`` keys).
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_ssl.errors import ConfigError


class AuxiliaryLoss(nn.Module):
    """Subclass this: set ``name``, implement ``count_items`` and ``forward``."""

    #: The loss's name in logs and results (``eval_<name>_loss``, metric ``<name>_accuracy``).
    name: str = "aux"
    #: True: ``forward`` reads the hidden states of the task's own pass (no second encoder pass).
    reads_task_pass: bool = False

    def count_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: dict, hidden: torch.Tensor | None = None):
        """(loss sum, item count, correct count or None) of ``batch`` for the classifier ``model``;
        ``hidden`` is the task pass's last hidden states when ``reads_task_pass``."""
        raise NotImplementedError

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens or patches of an extra encoder pass, for throughput (0: none)."""
        return 0

    def flops(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
        """Training FLOPs of an extra encoder pass and the head, for MFU (0: not counted)."""
        return 0.0


def attach_auxiliary(task: nn.Module, aux: AuxiliaryLoss | None, aux_weight: float) -> None:
    """Give a fine-tuning task its auxiliary loss and the weights ``L = L_cls + λ·L_aux``; with
    λ = 0 no auxiliary module exists at all (DDP then sees no unused parameter)."""
    if aux_weight < 0:
        raise ConfigError(f"aux_weight must be >= 0, got {aux_weight}")
    task.aux = aux if aux_weight > 0 else None
    task.aux_weight = float(aux_weight) if task.aux is not None else 0.0
    task.loss_weights = {"cls": 1.0} if task.aux is None else {"cls": 1.0, task.aux.name: task.aux_weight}
