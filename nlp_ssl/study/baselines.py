"""Baselines that a pretrained-then-fine-tuned model has to beat to mean anything.

Each fits a scikit-learn logistic regression on fixed features (TF-IDF n-grams, raw pixels, or the
mean-pooled states of a frozen encoder) and scores the test set with the package's own metrics, so
the numbers compare one to one with the fine-tuning recipes' ``accuracy`` and ``macro_f1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nlp_ssl.errors import DataError
from nlp_ssl.metrics import compute_classification_metrics

#: Inverse regularisation strength of the TF-IDF baseline. TF-IDF rows are L2-normalised and sparse,
#: so the default C=1 underfits badly with few labels; 10 is the usual choice for this model.
TFIDF_C = 10.0
#: For standardised pixels and embeddings: many dense features against few examples want a strong
#: prior towards small weights.
DENSE_C = 0.1


def tfidf_logreg(
    train_texts: Sequence[str],
    train_labels: Sequence,
    test_texts: Sequence[str],
    test_labels: Sequence,
    seed: int = 0,
    C: float = TFIDF_C,
) -> dict[str, float]:
    """TF-IDF of word 1-2-grams and character 2-5-grams, then logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    _check_split(train_texts, train_labels, "train")
    _check_split(test_texts, test_labels, "test")
    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=1),
    )
    model = make_pipeline(features, LogisticRegression(C=C, max_iter=2000, random_state=seed))
    return _fit_and_score(model, list(train_texts), train_labels, list(test_texts), test_labels)


def pixels_logreg(
    train_X, train_y: Sequence, test_X, test_y: Sequence, seed: int = 0, C: float = DENSE_C
) -> dict[str, float]:
    """Logistic regression on standardised raw pixels: what an image model gets for free.

    ``train_X``/``test_X``: arrays of shape (n, ...) or lists of PIL images; integer pixels are read
    as 0-255.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = _flat_pixels(train_X, "train"), _flat_pixels(test_X, "test")
    if train.shape[1] != test.shape[1]:
        raise DataError(f"pixels: train images have {train.shape[1]} values each, test images {test.shape[1]}")
    _check_split(train, train_y, "train")
    _check_split(test, test_y, "test")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    return _fit_and_score(model, train, train_y, test, test_y)


def frozen_embeddings_logreg(
    model_dir: str | Path,
    train_texts: Sequence[str],
    train_labels: Sequence,
    test_texts: Sequence[str],
    test_labels: Sequence,
    seed: int = 0,
    C: float = DENSE_C,
    batch_size: int = 64,
    max_length: int = 256,
    device: str | None = None,
) -> dict[str, float]:
    """Logistic regression on a frozen encoder's last hidden state, mean-pooled over real tokens.

    ``model_dir`` is any HF checkpoint folder with a tokenizer (an MLM checkpoint loads as its bare
    encoder). This is the linear probe: how much of the task the pretrained features already hold,
    without fine-tuning.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _check_split(train_texts, train_labels, "train")
    _check_split(test_texts, test_labels, "test")
    embed = _MeanPooler(model_dir, batch_size=batch_size, max_length=max_length, device=device)
    train, test = embed(list(train_texts)), embed(list(test_texts))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    return _fit_and_score(model, train, train_labels, test, test_labels)


#: A folder with none of these has no tokenizer of its own.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")


class _MeanPooler:
    """Texts -> float32 array (n, hidden): the masked mean of a frozen model's last hidden state."""

    def __init__(self, model_dir, batch_size: int, max_length: int, device: str | None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise DataError(f"{model_dir}: not a Hugging Face model folder (no config.json)")
        if not any((model_dir / name).is_file() for name in _TOKENIZER_FILES):
            # transformers would quietly build an empty-vocabulary tokenizer: every word [UNK].
            raise DataError(f"{model_dir}: no tokenizer saved with the model (none of {', '.join(_TOKENIZER_FILES)})")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except (OSError, ValueError, TypeError) as error:
            raise DataError(f"{model_dir}: no usable tokenizer saved with the model ({error})") from None
        if self.tokenizer.pad_token is None:  # GPT-2 style: any id will do, padded positions are masked out
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(model_dir).to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                out.append(pooled.cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def _check_split(inputs, labels, split: str) -> None:
    if len(inputs) != len(labels):
        raise DataError(f"baseline: {len(inputs)} {split} inputs but {len(labels)} {split} labels")
    if len(inputs) == 0:
        raise DataError(f"baseline: the {split} split is empty")


def _flat_pixels(images, split: str) -> np.ndarray:
    """(n, values) float32; integer pixels scaled from 0-255 to 0-1."""
    arrays = images if isinstance(images, np.ndarray) else np.stack([np.asarray(image) for image in images])
    if arrays.ndim < 2:
        raise DataError(
            f"pixels: {split} images must be an array (n, height, width[, channels]), got shape {arrays.shape}"
        )
    flat = arrays.reshape(len(arrays), -1)
    if np.issubdtype(flat.dtype, np.integer):
        return flat.astype(np.float32) / 255.0
    return flat.astype(np.float32)


def _fit_and_score(model, train, train_labels, test, test_labels) -> dict[str, float]:
    """Fit, predict, and score with ids shared by both splits (labels may be names or ids)."""
    classes = sorted(set(train_labels) | set(test_labels), key=str)
    if len(set(train_labels)) < 2:
        raise DataError(f"baseline: the train split has a single class ({classes[0]!r}); need at least two")
    index = {c: i for i, c in enumerate(classes)}
    train_ids = np.asarray([index[c] for c in train_labels])
    test_ids = np.asarray([index[c] for c in test_labels])
    model.fit(train, train_ids)
    return compute_classification_metrics(model.predict(test), test_ids)
