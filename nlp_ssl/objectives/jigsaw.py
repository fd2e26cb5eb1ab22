"""Jigsaw puzzles (Noroozi & Favaro 2016): cut an image into a grid of tiles, shuffle them by one of a
fixed set of permutations, and classify which permutation was used.

The permutation set is chosen once, seeded, for large Hamming distance (greedy max-min, as in the
paper), so that no two classes are nearly the same puzzle. Position j of the shuffled grid (row-major)
holds tile ``permutation[j]`` of the original; label k is the index of the permutation in the set.
Each tile is a random crop of its cell ``tile_jitter`` pixels smaller, resized to the cell it lands
in, so that the edges of neighbouring tiles do not line up and give the answer away (the paper's gaps).
Grids need not divide the image: cells are ``round(i · size / grid)`` apart, so they differ by a pixel
at most, and a tile is resized to the cell it lands in.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from nlp_ssl.data.image_transforms import ImageTransform, example_generator, images_of
from nlp_ssl.errors import ConfigError

#: Above this many permutations of the tiles, the greedy search runs on a seeded random sample of them.
MAX_CANDIDATES = 400_000


@lru_cache(maxsize=4)
def _all_permutations(tiles: int) -> np.ndarray:
    flat = itertools.chain.from_iterable(itertools.permutations(range(tiles)))
    return np.fromiter(flat, dtype=np.int8, count=math.factorial(tiles) * tiles).reshape(-1, tiles)


def permutation_set(tiles: int, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` permutations of ``tiles`` tiles (count × tiles, int64), greedy max-min Hamming distance.

    Start from a seeded random permutation, then repeatedly add the candidate whose distance to its
    nearest chosen permutation is largest (ties broken at random, seeded). With more than
    ``MAX_CANDIDATES`` permutations the candidates are a seeded random sample of them.
    """
    if tiles < 2:
        raise ConfigError(f"a jigsaw needs at least 2 tiles, got {tiles}")
    total = math.factorial(tiles)
    if not 2 <= count <= total:
        raise ConfigError(f"num_permutations must be in [2, {total}] for {tiles} tiles, got {count}")
    rng = np.random.default_rng(seed)
    if total <= MAX_CANDIDATES:
        candidates = _all_permutations(tiles)
    else:
        candidates = rng.permuted(np.tile(np.arange(tiles, dtype=np.int8), (MAX_CANDIDATES, 1)), axis=1)
    columns = np.ascontiguousarray(candidates.T)  # a column at a time: vectorised over the candidates
    chosen = [int(rng.integers(len(candidates)))]
    nearest = np.full(len(candidates), tiles + 1, dtype=np.int8)
    while len(chosen) < count:
        last, distance = candidates[chosen[-1]], np.zeros(len(candidates), dtype=np.int8)
        for position in range(tiles):
            distance += columns[position] != last[position]
        np.minimum(nearest, distance, out=nearest)
        best = np.flatnonzero(nearest == nearest.max())
        chosen.append(int(best[rng.integers(len(best))]))
    return torch.from_numpy(candidates[chosen].astype(np.int64))


def min_hamming_distance(permutations: torch.Tensor) -> int:
    """The smallest number of positions at which two permutations of the set differ."""
    differ = (permutations[:, None, :] != permutations[None, :, :]).sum(-1)
    differ.fill_diagonal_(permutations.shape[1] + 1)
    return int(differ.min())


def permutation_labels(permutations: torch.Tensor) -> dict[int, str]:
    """``id2label`` for the classifier: each class named by its permutation ("2 0 3 1"), so the set
    travels with the checkpoint's config."""
    return {k: " ".join(str(int(t)) for t in p) for k, p in enumerate(permutations)}


def permutations_from_labels(id2label: dict) -> torch.Tensor:
    """The permutation set written by :func:`permutation_labels` (keys may be strings, as in config.json)."""
    rows = [[int(t) for t in id2label[k].split()] for k in sorted(id2label, key=int)]
    return torch.tensor(rows, dtype=torch.long)


def cell_edges(size: int, grid: int) -> list[int]:
    return [round(i * size / grid) for i in range(grid + 1)]


def check_grid(image_size: int, grid: int, tile_jitter: int) -> None:
    """Every cell must keep at least one pixel after the jitter is cut from it."""
    if grid < 2:
        raise ConfigError(f"grid must be >= 2, got {grid}")
    smallest = min(b - a for a, b in itertools.pairwise(cell_edges(image_size, grid)))
    if tile_jitter < 0 or tile_jitter >= smallest:
        raise ConfigError(
            f"tile_jitter must be in [0, {smallest - 1}]: a {grid}×{grid} grid on {image_size}px images has "
            f"cells of {smallest}px (got tile_jitter {tile_jitter})"
        )


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if x.shape[-2:] == (height, width):
        return x
    return torch.nn.functional.interpolate(x[None], size=(height, width), mode="bilinear", antialias=True,
                                           align_corners=False)[0]


def shuffle_tiles(x: torch.Tensor, grid: int, permutation: Sequence[int], tile_jitter: int = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (C×S×S) with cell j of the output holding tile ``permutation[j]`` of ``x`` (row-major)."""
    size = x.shape[-1]
    edges = cell_edges(size, grid)
    cells = [(edges[r], edges[r + 1], edges[c], edges[c + 1]) for r in range(grid) for c in range(grid)]
    out = torch.empty_like(x)
    for target, source in zip(cells, permutation):
        top, bottom, left, right = cells[int(source)]
        h, w = bottom - top - tile_jitter, right - left - tile_jitter
        if tile_jitter:
            top += int(torch.randint(tile_jitter + 1, (1,), generator=generator))
            left += int(torch.randint(tile_jitter + 1, (1,), generator=generator))
        t0, t1, l0, l1 = target
        out[:, t0:t1, l0:l1] = _resize(x[:, top : top + h, left : left + w], t1 - t0, l1 - l0)
    return out


class JigsawCollator:
    """Turn ``[{"image": ...}]`` into ``pixel_values`` (B×C×S×S, tiles shuffled) and ``labels`` (the
    permutation's index in ``permutations``), both drawn per example from ``(seed, epoch, image)``."""

    def __init__(
        self,
        image_size: int,
        grid: int,
        permutations: torch.Tensor,
        num_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        tile_jitter: int = 0,
        seed: int = 0,
        augment: bool = False,
    ):
        check_grid(image_size, grid, tile_jitter)
        if permutations.ndim != 2 or permutations.shape[1] != grid * grid:
            raise ConfigError(f"permutations must be (count, {grid * grid}) for a {grid}×{grid} grid, "
                              f"got {tuple(permutations.shape)}")
        self.grid = grid
        self.permutations = permutations
        self.tile_jitter = tile_jitter
        self.seed = seed
        self.epoch = 0
        self.transform = ImageTransform(image_size, num_channels, mean, std, train=augment)

    def set_epoch(self, epoch: int) -> None:
        """New permutations (and crops) every epoch; the trainer calls this."""
        self.epoch = int(epoch)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        puzzles, labels = [], []
        for image in images_of(examples):
            generator = example_generator(self.seed, self.epoch, image)
            x = self.transform(image, generator)
            label = int(torch.randint(len(self.permutations), (1,), generator=generator))
            puzzles.append(shuffle_tiles(x, self.grid, self.permutations[label].tolist(), self.tile_jitter, generator))
            labels.append(label)
        return {"pixel_values": torch.stack(puzzles), "labels": torch.tensor(labels, dtype=torch.long)}
