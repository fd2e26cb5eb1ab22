"""Pieces every token-level objective shares: padding, seeded randomness, BERT 80/10/10.

Randomness is a pure function of ``(seed, epoch, example content)``, drawn per example
(:class:`RowRandom`): an example gets the same masks whichever dataloader worker builds its batch,
whatever else is in the batch (so gradient accumulation and N processes see the same masks as one
big batch), and after a resume that skipped the batches before it. The epoch enters the seed, so
masks change from epoch to epoch (RoBERTa's dynamic masking). No global RNG is read or advanced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from nlp_ssl.errors import DataError


def batch_generator(seed: int, *arrays: np.ndarray) -> torch.Generator:
    """A torch.Generator seeded from ``seed`` and the bytes of ``arrays``."""
    digest = hashlib.blake2b(int(seed).to_bytes(8, "little", signed=True), digest_size=8)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest.digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class RowRandom:
    """Uniform numbers for each example of a batch, from ``(seed, epoch, that example's tokens)``.

    ``uniform(stream, width)`` gives a ``(batch, width)`` tensor; different ``stream`` numbers are
    independent draws (one for choosing positions, one for the 80/10/10 kind, ...). Counter-based
    (splitmix64 over position), so it is vectorised and needs no per-example generator.
    """

    def __init__(self, seed: int, rows: Sequence, epoch: int = 0):
        seeds = []
        for row in rows:
            digest = hashlib.blake2b(np.asarray(row, dtype=np.int64).tobytes(), digest_size=8, key=_key(seed, epoch))
            seeds.append(int.from_bytes(digest.digest(), "little"))
        self.row_seeds = np.array(seeds, dtype=np.uint64)

    def uniform(self, stream: int, width: int) -> torch.Tensor:
        with np.errstate(over="ignore"):
            counter = (np.uint64(stream) << np.uint64(40)) + np.arange(width, dtype=np.uint64)
            bits = _splitmix64(_splitmix64(self.row_seeds[:, None] ^ _splitmix64(counter)[None, :]))
        return torch.from_numpy((bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24))


def _key(seed: int, epoch: int) -> bytes:
    return int(seed).to_bytes(8, "little", signed=True) + int(epoch).to_bytes(8, "little", signed=True)


def uniform(rng, stream: int, shape: tuple[int, int]) -> torch.Tensor:
    """Uniform [0, 1) numbers of ``shape`` from a :class:`RowRandom` or a ``torch.Generator``."""
    if isinstance(rng, RowRandom):
        return rng.uniform(stream, shape[1])
    return torch.rand(shape, generator=rng)


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
    if width == int(lengths.min()) and width == len(rows[0]):
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), width), lengths
    out = np.full((len(rows), width), pad_value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out, lengths


def attention_mask_from_lengths(lengths: np.ndarray, width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None]).long()


def non_special_vocab(vocab_size: int, special_ids: Sequence[int]) -> torch.Tensor:
    """Token ids a random replacement may use: the whole vocabulary but special tokens."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    ids = [i for i in special_ids if i is not None and 0 <= i < vocab_size]
    keep[ids] = False
    return keep.nonzero().squeeze(1)


def apply_mask_replacement(
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    generator: "RowRandom | torch.Generator",
    mask_token_id: int,
    random_token_ids: torch.Tensor,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 on the positions ``masked``; returns ``(new_input_ids, labels)`` with -100 elsewhere."""
    labels = torch.where(masked, input_ids, torch.full_like(input_ids, -100))
    u = uniform(generator, STREAM_KIND, tuple(input_ids.shape))
    to_mask = masked & (u < mask_replace_prob)
    to_random = masked & (u >= mask_replace_prob) & (u < mask_replace_prob + random_replace_prob)
    out = input_ids.masked_fill(to_mask, mask_token_id)
    if random_replace_prob > 0 and to_random.any():
        pick = (uniform(generator, STREAM_TOKEN, tuple(input_ids.shape)) * len(random_token_ids)).long()
        pick = pick.clamp(max=len(random_token_ids) - 1)
        out = torch.where(to_random, random_token_ids[pick], out)
    return out, labels


def choose_masked_positions(
    maskable: torch.Tensor,
    generator: "RowRandom | torch.Generator",
    probability: float,
    word_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick each maskable token (or each whole word, when ``word_ids`` is given) with ``probability``.

    ``word_ids`` holds, per token, the index of its word within the row (``-1`` for tokens that
    belong to no word); all tokens of a picked word are masked together.
    """
    if word_ids is None:
        return maskable & (uniform(generator, STREAM_POSITIONS, tuple(maskable.shape)) < probability)
    batch, width = word_ids.shape
    n_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    picked_word = uniform(generator, STREAM_WORDS, (batch, max(n_words, 1))) < probability
    picked = picked_word.gather(1, word_ids.clamp(min=0))
    return maskable & picked & (word_ids >= 0)


def check_probabilities(mlm_probability: float, mask_replace_prob: float, random_replace_prob: float) -> None:
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1.0:
        raise ValueError(
            "mask_replace_prob and random_replace_prob must be >= 0 and sum to at most 1, got "
            f"{mask_replace_prob} and {random_replace_prob}"
        )
