"""Translation language modelling (XLM): MLM over a sentence and its translation side by side.

Tokenization happens once, in a ``datasets.map`` step (:mod:`nlp_ssl.data.xlm_streams`), which writes ``src_ids``,
``tgt_ids``, ``src_lang`` and ``tgt_lang`` (``tgt_ids == []`` and ``tgt_lang == ""`` for a single
sentence). :class:`TLMCollator` lays a pair out as ``</s> src </s> </s> tgt </s>`` and a single
sentence as ``</s> text </s>``. ``langs`` holds each token's language id (the source language up to
and including the source's second ``</s>``), and ``position_ids`` restart at 0 on the target, as in
XLM, so that the model cannot align the two sentences by position alone. 15% of the tokens of both
sentences are predicted, 80/10/10, never a special token or a pad; a masked word can then be
recovered from its translation. The batch is what ``XLMWithLMHeadModel`` takes (its loss ignores
-100 labels: it uses ``cross_entropy``'s default ``ignore_index``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from nlp_ssl.errors import DataError
from nlp_ssl.objectives.masking import (
    TokenMasker,
    attention_mask_from_lengths,
    pad_column,
)


def _separator(tokenizer) -> int:
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if sep is None:
        raise DataError(f"tokenizer {tokenizer.name_or_path!r} has neither a sep nor an eos token; TLM needs </s>")
    return sep


def fit_pair(src: list[int], tgt: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Cut the end of the longer sentence, one token at a time, until both fit in ``budget`` tokens."""
    src, tgt = list(src), list(tgt)
    while len(src) + len(tgt) > budget:
        if len(src) >= len(tgt):
            src.pop()
        else:
            tgt.pop()
    return src, tgt


class TLMCollator:
    """Lay out, pad and mask TLM pairs and monolingual sentences for ``XLMWithLMHeadModel``.

    ``lang2id`` maps language codes to the model's language ids (``config.lang2id``). Output:
    ``input_ids``, ``attention_mask``, ``langs``, ``position_ids``, ``labels``; pads get language 0
    and position 0 (the model ignores them). Longer examples are cut to ``max_length``, the longer
    sentence first. ``causal=True`` is for XLM's causal LM (``config.causal``): nothing is masked and
    ``labels`` are the input ids (-100 at pads), unshifted, as :class:`nlp_ssl.tasks.causal_lm.CausalLMTask` wants.
    """

    def __init__(
        self,
        tokenizer,
        lang2id: Mapping[str, int],
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        max_length: int = 256,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
        causal: bool = False,
    ):
        for name in ("mask_token_id", "pad_token_id"):
            if getattr(tokenizer, name) is None:
                raise DataError(f"tokenizer {tokenizer.name_or_path!r} has no {name[:-3]}; TLM needs one")
        if not lang2id:
            raise DataError("lang2id is empty; give every language a model language id, e.g. {'en': 0, 'es': 1}")
        ids = list(lang2id.values())
        if any(not isinstance(i, int) or i < 0 for i in ids) or len(set(ids)) != len(ids):
            raise DataError(f"lang2id {dict(lang2id)} must map each language to a distinct non-negative integer")
        if max_length < 6:
            raise DataError(f"TLM max_length {max_length} leaves no room for two sentences and four </s>")
        self.lang2id = dict(lang2id)
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.causal = causal
        self.separator_id = _separator(tokenizer)
        self.pad_token_id = tokenizer.pad_token_id
        self.masker = TokenMasker(tokenizer, mlm_probability, mask_replace_prob, random_replace_prob, seed)

    def set_epoch(self, epoch: int) -> None:
        """Masks depend on the epoch too (dynamic masking); the trainer calls this."""
        self.masker.set_epoch(epoch)

    def _lang_id(self, example: dict, field: str, index: int) -> int:
        code = example.get(field)
        if code not in self.lang2id:
            raise DataError(
                f"TLM example {index}: unknown language code {code!r} in field {field!r}; "
                f"known codes: {sorted(self.lang2id)}"
            )
        return self.lang2id[code]

    def layout(self, example: dict, index: int = 0) -> dict[str, list[int]]:
        """``input_ids``, ``langs`` and ``position_ids`` of one example, before padding and masking."""
        if "src_ids" not in example:
            raise DataError(
                f"TLM example {index} has no field 'src_ids' (fields: {sorted(example)}); "
                "tokenize with prepare_tlm_dataset or prepare_monolingual_dataset first"
            )
        src, tgt = list(example["src_ids"]), list(example.get("tgt_ids") or [])
        if not src:
            raise DataError(f"TLM example {index}: field 'src_ids' is empty")
        sep = self.separator_id
        src_lang = self._lang_id(example, "src_lang", index)
        if not tgt:
            src = src[: self.max_length - 2]
            n = len(src) + 2
            return {"input_ids": [sep, *src, sep], "langs": [src_lang] * n, "position_ids": list(range(n))}
        tgt_lang = self._lang_id(example, "tgt_lang", index)
        src, tgt = fit_pair(src, tgt, self.max_length - 4)
        n_src, n_tgt = len(src) + 2, len(tgt) + 2
        return {
            "input_ids": [sep, *src, sep, sep, *tgt, sep],
            "langs": [src_lang] * n_src + [tgt_lang] * n_tgt,
            "position_ids": list(range(n_src)) + list(range(n_tgt)),
        }

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = [self.layout(example, i) for i, example in enumerate(examples)]
        ids_np, lengths = pad_column(rows, "input_ids", self.pad_token_id, self.pad_to_multiple_of)
        input_ids = torch.from_numpy(ids_np)
        langs = torch.from_numpy(pad_column(rows, "langs", 0, self.pad_to_multiple_of)[0])
        position_ids = torch.from_numpy(pad_column(rows, "position_ids", 0, self.pad_to_multiple_of)[0])
        attention_mask = attention_mask_from_lengths(lengths, input_ids.shape[1])
        if self.causal:
            labels = input_ids.masked_fill(attention_mask == 0, -100)
            return {"input_ids": input_ids, "attention_mask": attention_mask, "langs": langs, "position_ids": position_ids,
                    "labels": labels}
        # Rows are seeded by their tokens and languages: the same masks whatever the batching.
        input_ids, labels = self.masker(ids_np, lengths, attention_mask, identity=ids_np * 1024 + langs.numpy())
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "langs": langs,
            "position_ids": position_ids,
            "labels": labels,
        }
