"""An offline sentence-pair task from the built-in corpus: do two Wikipedia articles share a topic?

GLUE cannot be downloaded here, so this stands in for its pair tasks (it is not GLUE). Each example
pairs the first sentence of one article's lead with the first sentence of another's; half the pairs
share the human ``topic`` label (People, Geography, Biology and health sciences, ...), half do not.
Telling them apart needs what a pretrained encoder should know: what a sentence is about. Training
pairs come from the English training articles, test pairs from the held-out test articles.
"""

from __future__ import annotations

import re

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value

LABELS = ("different_topic", "same_topic")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def first_sentence(text: str, limit: int = 300) -> str:
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0][:limit]


def topic_pairs(articles: Dataset, n_pairs: int, seed: int, drop_topics=("Uncategorized",)) -> Dataset:
    """``n_pairs`` balanced pairs (``text``, ``text_pair``, ``label``) drawn with ``seed``."""
    topics = np.asarray(articles["topic"])
    keep = np.flatnonzero(~np.isin(topics, list(drop_topics)))
    sentences = [first_sentence(t) for t in articles.select(keep)["text"]]
    topics = topics[keep]
    by_topic = {t: np.flatnonzero(topics == t) for t in np.unique(topics)}
    rng = np.random.default_rng(seed)
    rows = {"text": [], "text_pair": [], "label": []}
    for _ in range(n_pairs):
        a = int(rng.integers(len(sentences)))
        same = bool(rng.integers(2))
        pool = by_topic[topics[a]] if same else np.flatnonzero(topics != topics[a])
        b = a
        while b == a:
            b = int(pool[rng.integers(len(pool))])
        rows["text"].append(sentences[a])
        rows["text_pair"].append(sentences[b])
        rows["label"].append(int(same))
    features = Features({"text": Value("string"), "text_pair": Value("string"), "label": ClassLabel(names=list(LABELS))})
    return Dataset.from_dict(rows, features=features)
