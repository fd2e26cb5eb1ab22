"""XLM's training streams, tokenized once: one per language (monolingual MLM or CLM) and one per
translation direction (TLM pairs), in the columns :class:`~nlp_ssl.objectives.tlm.TLMCollator` lays out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from datasets import Dataset

from nlp_ssl.errors import DataError
from nlp_ssl.objectives.tlm import fit_pair


class PairTokenizer:
    """Batched ``datasets.map`` function: a ``translation`` column into TLM columns (picklable, so cached)."""

    def __init__(self, tokenizer, src_lang: str, tgt_lang: str, column: str, max_length: int | None):
        self.tokenizer = tokenizer
        self.langs = (src_lang, tgt_lang)
        self.column = column
        self.max_length = max_length

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        texts = {lang: [] for lang in self.langs}
        for index, pair in zip(indices, batch[self.column]):
            if not isinstance(pair, Mapping):
                raise DataError(f"{self.column} row {index}: expected a {{language: text}} mapping, got {type(pair).__name__}")
            for lang in self.langs:
                text = pair.get(lang)
                if not isinstance(text, str) or not text.strip():
                    present = sorted(k for k, v in pair.items() if isinstance(v, str) and v.strip())
                    raise DataError(f"{self.column} row {index}: language {lang!r} missing (the row has {present})")
                texts[lang].append(text)
        src = self.tokenizer(texts[self.langs[0]], add_special_tokens=False)["input_ids"]
        tgt = self.tokenizer(texts[self.langs[1]], add_special_tokens=False)["input_ids"]
        if self.max_length is not None:
            fitted = [fit_pair(s, t, self.max_length - 4) for s, t in zip(src, tgt)]
            src, tgt = [s for s, _ in fitted], [t for _, t in fitted]
        n = len(src)
        return {"src_ids": src, "tgt_ids": tgt, "src_lang": [self.langs[0]] * n, "tgt_lang": [self.langs[1]] * n}


def prepare_tlm_dataset(
    ds: Dataset,
    tokenizer,
    src_lang: str,
    tgt_lang: str,
    translation_column: str = "translation",
    max_length: int | None = None,
    num_proc: int | None = None,
) -> Dataset:
    """Tokenize translation pairs into ``src_ids``/``tgt_ids``/``src_lang``/``tgt_lang``.

    With ``max_length``, pairs are cut to fit the laid-out length (4 specials included).
    """
    if translation_column not in ds.column_names:
        raise DataError(f"TLM data: no column {translation_column!r} (columns: {', '.join(ds.column_names)})")
    if src_lang == tgt_lang:
        raise DataError(f"TLM data: src_lang and tgt_lang are both {src_lang!r}")
    if max_length is not None and max_length < 6:
        raise DataError(f"TLM max_length {max_length} leaves no room for two sentences and four </s>")
    return ds.map(
        PairTokenizer(tokenizer, src_lang, tgt_lang, translation_column, max_length),
        batched=True,
        with_indices=True,
        remove_columns=ds.column_names,
        num_proc=num_proc,
        desc=f"Tokenizing {src_lang}-{tgt_lang} pairs",
    )


class MonolingualChunker:
    """Batched ``datasets.map`` function: texts into ``max_length - 2``-token sentences of one language."""

    def __init__(self, tokenizer, lang: str, column: str, max_length: int):
        self.tokenizer = tokenizer
        self.lang = lang
        self.column = column
        self.body = max_length - 2

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        for index, text in zip(indices, batch[self.column]):
            if not isinstance(text, str):
                raise DataError(f"monolingual data row {index}: field {self.column!r} missing")
        chunks = []
        for ids in self.tokenizer(batch[self.column], add_special_tokens=False)["input_ids"]:
            chunks.extend(ids[k : k + self.body] for k in range(0, len(ids), self.body))
        n = len(chunks)
        return {"src_ids": chunks, "tgt_ids": [[] for _ in range(n)], "src_lang": [self.lang] * n, "tgt_lang": [""] * n}


def prepare_monolingual_dataset(
    ds: Dataset,
    tokenizer,
    lang: str,
    text_column: str = "text",
    max_length: int = 256,
    num_proc: int | None = None,
) -> Dataset:
    """Tokenize one language's texts into TLM columns with no target; long texts become several rows."""
    if text_column not in ds.column_names:
        raise DataError(f"monolingual data: no column {text_column!r} (columns: {', '.join(ds.column_names)})")
    if max_length < 3:
        raise DataError(f"max_length {max_length} leaves no room for a sentence between two </s>")
    return ds.map(
        MonolingualChunker(tokenizer, lang, text_column, max_length),
        batched=True,
        with_indices=True,
        remove_columns=ds.column_names,
        num_proc=num_proc,
        desc=f"Tokenizing {lang} text",
    )


def xlm_streams(mono: Mapping, pairs, directions: Sequence[tuple[str, str]], tokenizer, max_length: int,
                num_proc: int | None = None) -> dict[str, dict[str, Dataset]]:
    """{split: {stream: dataset}}: one stream per language (``mono[lang][split]``) and one per translation
    direction (``"en-es"``, from ``pairs[split]``), in that order."""
    streams: dict[str, dict[str, Dataset]] = {split: {} for split in ("train", "validation")}
    for split, out in streams.items():
        for lang in mono:
            out[lang] = prepare_monolingual_dataset(mono[lang][split], tokenizer, lang, max_length=max_length, num_proc=num_proc)
        for src, tgt in directions:
            out[f"{src}-{tgt}"] = prepare_tlm_dataset(pairs[split], tokenizer, src, tgt, max_length=max_length,
                                                      num_proc=num_proc)
    return streams
