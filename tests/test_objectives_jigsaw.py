"""Jigsaw puzzles: the permutation set (size, spread, seed), the shuffled tiles and their labels."""

import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from nlp_ssl.data.image_transforms import ImageTransform
from nlp_ssl.errors import ConfigError
from nlp_ssl.objectives.jigsaw import (
    JigsawCollator,
    cell_edges,
    min_hamming_distance,
    permutation_labels,
    permutation_set,
    permutations_from_labels,
    shuffle_tiles,
)


def images(n, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L")} for _ in range(n)]


@pytest.mark.parametrize("tiles, count, min_distance", [(4, 4, 4), (4, 24, 2), (9, 100, 6), (16, 30, 14)])
def test_permutation_set_has_its_size_and_spreads_the_permutations(tiles, count, min_distance):
    perms = permutation_set(tiles, count, seed=0)
    assert perms.shape == (count, tiles) and perms.dtype == torch.long
    assert all(sorted(p) == list(range(tiles)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == count
    assert min_hamming_distance(perms) == min_distance
    # A random draw of as many permutations is far less spread out (greedy max-min is the point);
    # 16 tiles have too many orderings to search them all: a seeded sample is the candidates.
    if count < math.factorial(tiles):
        rng = np.random.default_rng(0)
        random_set = torch.tensor(np.array([rng.permutation(tiles) for _ in range(count)]))
        assert min_hamming_distance(random_set) < min_distance


def test_permutation_set_is_seeded_and_the_greedy_pick_is_the_farthest():
    perms = permutation_set(9, 30, seed=1)
    assert torch.equal(permutation_set(9, 30, seed=1), perms)
    assert not torch.equal(permutation_set(9, 30, seed=2), perms)
    # Each permutation, when added, was as far from those before it as any candidate could be:
    # its distance to its nearest predecessor never increases along the set.
    nearest = [min(int((perms[k] != perms[j]).sum()) for j in range(k)) for k in range(1, 30)]
    assert nearest == sorted(nearest, reverse=True) and nearest[0] == 9
    all_perms = torch.tensor(list(itertools.permutations(range(9))))
    distance_to_set = (all_perms[:, None, :] != perms[None, :10, :]).sum(-1).min(1).values
    assert nearest[9] == int(distance_to_set.max())  # the 11th pick, against all 9! candidates


def test_sizes_that_cannot_work_are_config_errors():
    with pytest.raises(ConfigError, match=r"num_permutations must be in \[2, 24\]"):
        permutation_set(4, 25)
    with pytest.raises(ConfigError, match="tile_jitter"):
        JigsawCollator(28, 3, permutation_set(9, 5), tile_jitter=9)
    with pytest.raises(ConfigError, match=r"permutations must be \(count, 4\)"):
        JigsawCollator(28, 2, permutation_set(9, 5))


def test_labels_carry_the_set_through_a_config():
    perms = permutation_set(9, 12, seed=0)
    labels = permutation_labels(perms)
    assert labels[0] == " ".join(map(str, perms[0].tolist()))
    from_json = {str(k): v for k, v in labels.items()}  # config.json keys are strings
    assert torch.equal(permutations_from_labels(from_json), perms)


def test_position_j_holds_tile_permutation_j_and_the_inverse_restores_the_image():
    x = torch.arange(2 * 12 * 12, dtype=torch.float32).view(2, 12, 12)
    permutation = [2, 0, 3, 1]
    shuffled = shuffle_tiles(x, 2, permutation)
    tile = {0: (0, 0), 1: (0, 6), 2: (6, 0), 3: (6, 6)}
    for position, source in enumerate(permutation):
        (r, c), (sr, sc) = tile[position], tile[source]
        assert torch.equal(shuffled[:, r : r + 6, c : c + 6], x[:, sr : sr + 6, sc : sc + 6])
    inverse = np.argsort(permutation).tolist()
    assert torch.equal(shuffle_tiles(shuffled, 2, inverse), x)


def test_a_grid_that_does_not_divide_the_image_keeps_every_pixel_in_a_cell():
    assert cell_edges(28, 3) == [0, 9, 19, 28]
    x = torch.rand(1, 28, 28)
    assert torch.equal(shuffle_tiles(x, 3, list(range(9))), x)  # identity, no jitter: the image itself
    swapped = shuffle_tiles(x, 3, [1, 0, 2, 3, 4, 5, 6, 7, 8])  # a 9px-wide and a 10px-wide tile trade places
    assert torch.equal(swapped[:, 9:, :], x[:, 9:, :]) and not torch.equal(swapped, x)


def test_collator_labels_name_the_permutation_drawn_per_example():
    perms = permutation_set(4, 10, seed=0)
    examples = images(40)
    collator = JigsawCollator(28, 2, perms, num_channels=1, seed=3)
    batch = collator(examples)
    assert batch["pixel_values"].shape == (40, 1, 28, 28) and batch["labels"].shape == (40,)
    assert len(set(batch["labels"].tolist())) >= 8
    plain = ImageTransform(28, 1)
    for example, x, label in zip(examples, batch["pixel_values"], batch["labels"].tolist()):
        assert torch.equal(x, shuffle_tiles(plain(example["image"]), 2, perms[label].tolist()))
    # Per example, whatever the batch; another draw next epoch.
    alone = [collator([e]) for e in examples[:5]]
    assert [a["labels"].item() for a in alone] == batch["labels"][:5].tolist()
    assert all(torch.equal(a["pixel_values"][0], batch["pixel_values"][i]) for i, a in enumerate(alone))
    assert torch.equal(JigsawCollator(28, 2, perms, num_channels=1, seed=3)(examples)["labels"], batch["labels"])
    collator.set_epoch(1)
    assert not torch.equal(collator(examples)["labels"], batch["labels"])


def test_tile_jitter_crops_each_tile_so_edges_do_not_line_up():
    perms = permutation_set(9, 5, seed=0)
    examples = images(4)
    exact = JigsawCollator(28, 3, perms, num_channels=1, seed=0)(examples)
    jittered = JigsawCollator(28, 3, perms, num_channels=1, seed=0, tile_jitter=2)(examples)
    assert torch.equal(exact["labels"], jittered["labels"])  # the permutation is drawn before the crops
    assert not torch.equal(exact["pixel_values"], jittered["pixel_values"])
    assert jittered["pixel_values"].shape == exact["pixel_values"].shape
