"""Predictions of a fine-tuned classifier over a dataset: what the test scores are computed from.

One function for text and images: the dataset's rows go through the same collator as at
evaluation (no augmentation, no masking), so a test score measures the model that training saw.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def predict(model, dataset, collator, batch_size: int, device) -> np.ndarray:
    """Class ids (or scores, for a one-output regression head) for every row of ``dataset``, in order.

    ``collator`` turns a list of rows into the model's inputs (plus ``labels``, which are dropped);
    the model's training/eval mode is restored afterwards, since the trainer scores the last model
    and then keeps training or reloads the best one.
    """
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        batch = collator([dict(zip(rows, values)) for values in zip(*rows.values())])
        batch.pop("labels", None)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
        preds.append((logits[:, 0] if logits.shape[-1] == 1 else logits.argmax(-1)).cpu().numpy())
    model.train(was_training)
    return np.concatenate(preds)
