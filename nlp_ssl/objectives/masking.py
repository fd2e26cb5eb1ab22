"""Pieces every token-level objective shares: padding, seeded randomness, BERT 80/10/10.

Randomness is a pure function of ``(seed, epoch, example content)``, drawn per example
(:class:`RowRandom`): an example gets the same masks whichever dataloader worker builds its batch,
whatever else is in the batch (so gradient accumulation and N processes see the same masks as one
big batch), and after a resume that skipped the batches before it. The epoch enters the seed, so
masks change from epoch to epoch (RoBERTa's dynamic masking). No global RNG is read or advanced.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np
import torch

from nlp_ssl.errors import ConfigError, DataError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class RowRandom:
    """Uniform numbers for each example of a batch, from ``(seed, epoch, that example's tokens)``.

    ``uniform(stream, width)`` gives a ``(batch, width)`` array; different ``stream`` numbers are
    independent draws (one for choosing positions, one for the 80/10/10 kind, ...). Counter-based
    (splitmix64 of the example's hash and the position), so it is vectorised: no per-example
    generator, no Python loop over the batch.
    """

    def __init__(self, seed: int, ids: np.ndarray, lengths: np.ndarray, epoch: int = 0):
        """``ids``: the right-padded ``(batch, width)`` tokens; only the first ``lengths[i]`` count."""
        width = ids.shape[1]
        with np.errstate(over="ignore"):
            # A polynomial hash of the first lengths[i] tokens (mod 2**64), then mixed with the key.
            terms = (ids.astype(np.uint64) + np.uint64(1)) * _powers(width)[None, :]
            terms[np.arange(width)[None, :] >= lengths[:, None]] = 0
            key = _splitmix64(np.uint64(seed & 0xFFFF_FFFF_FFFF_FFFF) * _MIX + np.uint64(epoch))
            row_hash = terms.sum(axis=1, dtype=np.uint64) + lengths.astype(np.uint64) * _MIX
            self.row_seeds = _splitmix64(_splitmix64(row_hash) ^ key)

    def uniform(self, stream: int, width: int) -> np.ndarray:
        counter = (np.uint64(stream) << np.uint64(32)) + np.arange(1, width + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            return _to_unit(_splitmix64(self.row_seeds[:, None] + counter[None, :] * _GOLDEN))

    def uniform_at(self, stream: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The numbers ``uniform(stream, ...)[rows, cols]`` would hold, computed only there."""
        counter = (np.uint64(stream) << np.uint64(32)) + cols.astype(np.uint64) + np.uint64(1)
        with np.errstate(over="ignore"):
            return _to_unit(_splitmix64(self.row_seeds[rows] + counter * _GOLDEN))


_MIX = np.uint64(0xD1B54A32D192ED03)


@functools.lru_cache(maxsize=16)
def _powers(width: int) -> np.ndarray:
    """Odd multipliers MIX**j (mod 2**64), j < width, for the row hash."""
    powers = np.empty(width, dtype=np.uint64)
    value = 1
    for j in range(width):
        powers[j] = value
        value = (value * int(_MIX)) & 0xFFFF_FFFF_FFFF_FFFF
    powers.flags.writeable = False
    return powers


def _to_unit(bits: np.ndarray) -> np.ndarray:
    return (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def uniform(rng, stream: int, shape: tuple[int, int]) -> np.ndarray:
    """Uniform [0, 1) numbers of ``shape`` from a :class:`RowRandom` or a ``torch.Generator``."""
    if isinstance(rng, RowRandom):
        return rng.uniform(stream, shape[1])
    return torch.rand(shape, generator=rng).numpy()


def uniform_at(rng, stream: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers at the positions ``(rows, cols)`` only."""
    if isinstance(rng, RowRandom):
        return rng.uniform_at(stream, rows, cols)
    return torch.rand(rows.shape, generator=rng).numpy()


# Streams of RowRandom draws.
STREAM_POSITIONS, STREAM_WORDS, STREAM_KIND, STREAM_TOKEN = 0, 1, 2, 3


def pad_column(
    examples: Sequence[dict], key: str, pad_value: int, pad_to_multiple_of: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``examples[i][key]`` into a right-padded int64 array; also return the length of each row."""
    try:
        rows = [example[key] for example in examples]
    except KeyError:
        raise DataError(f"collator: example is missing the field {key!r}") from None
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    if len(rows) == 0:
        raise DataError("collator: got an empty batch")
    width = int(lengths.max())
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    if width == int(lengths.min()):
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=len(rows) * width)
        return flat.reshape(len(rows), width), lengths
    out = np.full((len(rows), width), pad_value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out, lengths


def attention_mask_from_lengths(lengths: np.ndarray, width: int) -> torch.Tensor:
    return torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64))


def non_special_vocab(vocab_size: int, special_ids: Sequence[int]) -> torch.Tensor:
    """Token ids a random replacement may use: the whole vocabulary but special tokens."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    ids = [i for i in special_ids if i is not None and 0 <= i < vocab_size]
    keep[ids] = False
    return keep.nonzero().squeeze(1)


def apply_mask_replacement(
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    generator: RowRandom | torch.Generator,
    mask_token_id: int,
    random_token_ids: torch.Tensor,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 on the positions ``masked``; returns ``(new_input_ids, labels)`` with -100 elsewhere."""
    ids = input_ids.numpy()
    where = masked.numpy()
    labels = np.where(where, ids, -100)
    rows, cols = np.nonzero(where)
    kind = uniform_at(generator, STREAM_KIND, rows, cols)
    out = ids.copy()
    to_mask = kind < mask_replace_prob
    out[rows[to_mask], cols[to_mask]] = mask_token_id
    to_random = (kind >= mask_replace_prob) & (kind < mask_replace_prob + random_replace_prob)
    if random_replace_prob > 0 and to_random.any():
        r, c = rows[to_random], cols[to_random]
        choices = random_token_ids.numpy()
        pick = np.minimum((uniform_at(generator, STREAM_TOKEN, r, c) * len(choices)).astype(np.int64), len(choices) - 1)
        out[r, c] = choices[pick]
    return torch.from_numpy(out), torch.from_numpy(labels)


def choose_masked_positions(
    maskable: torch.Tensor,
    generator: RowRandom | torch.Generator,
    probability: float,
    word_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick each maskable token (or each whole word, when ``word_ids`` is given) with ``probability``.

    ``word_ids`` holds, per token, the index of its word within the row (``-1`` for tokens that
    belong to no word); all tokens of a picked word are masked together.
    """
    able = maskable.numpy()
    if word_ids is None:
        return torch.from_numpy(able & (uniform(generator, STREAM_POSITIONS, able.shape) < probability))
    words = word_ids.numpy()
    n_words = int(words.max()) + 1 if words.size else 0
    picked_word = uniform(generator, STREAM_WORDS, (words.shape[0], max(n_words, 1))) < probability
    picked = np.take_along_axis(picked_word, np.maximum(words, 0), axis=1)
    return torch.from_numpy(able & picked & (words >= 0))


def check_probabilities(mlm_probability: float, mask_replace_prob: float, random_replace_prob: float) -> None:
    if not 0.0 < mlm_probability < 1.0:
        raise ConfigError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1.0:
        raise ConfigError(
            "mask_replace_prob and random_replace_prob must be >= 0 and sum to at most 1, got "
            f"{mask_replace_prob} and {random_replace_prob}"
        )


class TokenMasker:
    """BERT masking of a padded batch, shared by the MLM, NSP and TLM collators.

    Picks tokens (or whole words) with ``mlm_probability`` among non-special, non-pad positions, then
    replaces 80% with the mask token, 10% with a random non-special token and keeps 10%. Randomness is
    per example and per epoch (:class:`RowRandom`); ``set_epoch`` changes the masks (dynamic masking).
    """

    def __init__(self, tokenizer, mlm_probability: float = 0.15, mask_replace_prob: float = 0.8,
                 random_replace_prob: float = 0.1, seed: int = 0):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        if tokenizer.mask_token_id is None:
            raise DataError(f"tokenizer {name!r} has no mask token; MLM needs one (e.g. [MASK] or <mask>)")
        if tokenizer.pad_token_id is None:
            raise DataError(f"tokenizer {name!r} has no pad token; set tokenizer.pad_token first")
        check_probabilities(mlm_probability, mask_replace_prob, random_replace_prob)
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.seed = seed
        self.epoch = 0
        self.mask_token_id = tokenizer.mask_token_id
        self.is_special = np.zeros(len(tokenizer), dtype=bool)
        self.is_special[sorted(set(tokenizer.all_special_ids))] = True
        self.random_token_ids = non_special_vocab(len(tokenizer), tokenizer.all_special_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, ids: np.ndarray, lengths: np.ndarray, attention_mask: torch.Tensor,
                 identity: np.ndarray | None = None, word_ids: torch.Tensor | None = None):
        """``(masked input_ids, labels)``; ``identity`` (default: ``ids``) is what seeds each row."""
        generator = RowRandom(self.seed, ids if identity is None else identity, lengths, self.epoch)
        maskable = attention_mask.bool() & ~torch.from_numpy(self.is_special[ids])
        masked = choose_masked_positions(maskable, generator, self.mlm_probability, word_ids)
        return apply_mask_replacement(
            torch.from_numpy(ids), masked, generator, self.mask_token_id, self.random_token_ids,
            self.mask_replace_prob, self.random_replace_prob,
        )
