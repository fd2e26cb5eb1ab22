"""The vision study's baselines, fitted on exactly the images a fine-tuning run of the same k and seed sees.

- ``pixels_logreg``: logistic regression on raw pixels (:func:`nlp_ssl.study.baselines.pixels_logreg`);
- ``pixels_knn``: k-nearest neighbours on raw pixels, the number of neighbours chosen on the run's
  validation images (as the ViTs choose their learning rate there);
- ``frozen_probe``: the same logistic regression on a frozen pretrained ViT's features, the final
  [CLS] state or the mean of the patch states: how much of the task the pretext task's features
  already separate, without fine-tuning;
- ``frozen_knn``: kNN on the same frozen features by cosine similarity, the number of neighbours
  chosen on validation: how contrastive features are usually judged (the nearest images of one class).

Each takes the parsed fine-tuning config and returns test scores as a fine-tuning run records them.
"""

from __future__ import annotations

import numpy as np

from nlp_ssl.data.image_splits import labelled_splits
from nlp_ssl.errors import ConfigError
from nlp_ssl.metrics import compute_classification_metrics
from nlp_ssl.study.baselines import pixels_logreg

#: Candidate numbers of neighbours for kNN (those above the number of training images are skipped).
NEIGHBOURS = (1, 3, 5, 10, 20)


def _scores(scores: dict, test) -> dict:
    return {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"], "test_examples": len(test)}


def _pixels(dataset) -> np.ndarray:
    """(n, values) float32 in [0, 1]."""
    return np.stack([np.asarray(image, dtype=np.float32).reshape(-1) / 255.0 for image in dataset["image"]])


def logreg_on_pixels(ft) -> dict:
    splits = labelled_splits(ft.data, ft.seed)
    train, test = splits["train"], splits["test"]
    scores = pixels_logreg(list(train["image"]), train["label"], list(test["image"]), test["label"], seed=ft.seed)
    return _scores(scores, test)


def knn_on_pixels(ft) -> dict:
    """kNN (Euclidean, on [0, 1] pixels); the number of neighbours with the best validation accuracy
    (ties: the fewest) is then scored on the test images."""
    splits = labelled_splits(ft.data, ft.seed)
    return _knn(*[(_pixels(splits[s]), splits[s]) for s in ("train", "validation", "test")])


def _knn(train: tuple, validation: tuple, test: tuple) -> dict:
    """kNN (Euclidean) on ``(features, split)`` pairs, the number of neighbours chosen on validation."""
    from sklearn.neighbors import KNeighborsClassifier

    (x_train, train_split), (x_val, val_split), (x_test, test_split) = train, validation, test
    y_train, y_val = np.asarray(train_split["label"]), np.asarray(val_split["label"])
    candidates = [n for n in NEIGHBOURS if n <= len(x_train)]
    accuracy = {}
    for n in candidates:
        model = KNeighborsClassifier(n_neighbors=n).fit(x_train, y_train)
        accuracy[n] = float(np.mean(model.predict(x_val) == y_val))
    best = max(candidates, key=lambda n: (accuracy[n], -n))
    model = KNeighborsClassifier(n_neighbors=best).fit(x_train, y_train)
    scores = compute_classification_metrics(model.predict(x_test), np.asarray(test_split["label"]))
    return {**_scores(scores, test_split), "neighbours": best, "val_accuracy_by_neighbours": accuracy}


def vit_features(checkpoint: str, images, image_config, pooling: str, batch_size: int = 256) -> np.ndarray:
    """(n, hidden) features of a frozen ViT checkpoint: the final (layer-normed) [CLS] state, or the
    mean of the patch states; images go through the evaluation transform the checkpoint trained with."""
    import torch
    from transformers import AutoConfig, ViTModel

    from nlp_ssl.data.image_transforms import ImageTransform
    from nlp_ssl.models.grayscale_vit import from_checkpoint

    if pooling not in ("cls", "mean"):
        raise ConfigError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
    c = image_config
    config = AutoConfig.from_pretrained(checkpoint, num_channels=c.num_channels)
    model = from_checkpoint(ViTModel, checkpoint, config, add_pooling_layer=False).eval()  # as trained
    transform = ImageTransform(c.image_size, c.num_channels, c.mean, c.std)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([transform(im) for im in images[start : start + batch_size]])
            hidden = model(pixel_values=pixels).last_hidden_state
            out.append((hidden[:, 0] if pooling == "cls" else hidden[:, 1:].mean(1)).numpy())
    return np.concatenate(out)


def frozen_probe(checkpoint: str, pooling: str):
    """A baseline: logistic regression on ``checkpoint``'s frozen ``pooling`` features."""

    def fit(ft) -> dict:
        splits = labelled_splits(ft.data, ft.seed)
        train, test = splits["train"], splits["test"]
        features = [vit_features(checkpoint, list(s["image"]), ft.image, pooling) for s in (train, test)]
        return _scores(pixels_logreg(features[0], train["label"], features[1], test["label"], seed=ft.seed), test)

    return fit


def frozen_knn(checkpoint: str, pooling: str):
    """A baseline: kNN by cosine similarity on ``checkpoint``'s frozen ``pooling`` features (L2-normalised,
    so Euclidean neighbours are the cosine ones), the number of neighbours chosen on validation."""

    def fit(ft) -> dict:
        splits = labelled_splits(ft.data, ft.seed)
        parts = []
        for name in ("train", "validation", "test"):
            features = vit_features(checkpoint, list(splits[name]["image"]), ft.image, pooling)
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            parts.append((features / np.maximum(norms, 1e-12), splits[name]))
        return _knn(*parts)

    return fit
