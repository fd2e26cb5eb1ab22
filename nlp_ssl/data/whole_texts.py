"""Whole texts as examples, each truncated to ``data.block_size`` tokens, for the objectives that
embed one text at a time (SimCSE): a packed block that straddles two documents has no single meaning."""

from __future__ import annotations

from nlp_ssl.errors import ConfigError, DataError


class TruncatedTexts:
    """Batched ``datasets.map`` function: each text as one example of at most ``max_length`` tokens
    (the tokenizer's own special tokens included); texts with no token of their own are dropped.
    A picklable class, so ``datasets`` fingerprints it and reuses the cache."""

    def __init__(self, tokenizer, text_column: str, max_length: int):
        self.tokenizer, self.text_column, self.max_length = tokenizer, text_column, max_length
        self.specials = len(tokenizer("", add_special_tokens=True)["input_ids"])

    def __call__(self, batch: dict) -> dict:
        texts = [t for t in batch[self.text_column] if isinstance(t, str)]
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return {"input_ids": [row for row in ids if len(row) > self.specials]}


def whole_texts(corpus, tokenizer) -> dict:
    """``{"train", "validation"}`` examples of a ``TextCorpus``: one per text, truncated to ``data.block_size``."""
    cfg = corpus.cfg
    if corpus.raw is None:
        raise ConfigError("data.prepared holds packed blocks; simcse reads whole texts: drop data.prepared")
    out = {}
    for split, ds in corpus.raw.items():
        kwargs = {} if cfg.streaming else {"num_proc": cfg.num_proc, "desc": f"Tokenizing texts (≤ {cfg.block_size} tokens)"}
        out[split] = ds.map(TruncatedTexts(tokenizer, cfg.text_column, cfg.block_size), batched=True,
                            remove_columns=ds.column_names, **kwargs)
        if not cfg.streaming and len(out[split]) == 0:
            raise DataError(f"simcse: the {split} split has no text with a token in it")
    return out
