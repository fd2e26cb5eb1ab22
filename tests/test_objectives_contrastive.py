"""The contrastive loss (NT-Xent with groups, negatives gathered across processes), SimCLR's two-view
collator and MICLe's same-group positives."""

import math
import socket

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from nlp_ssl.data.image_transforms import ImageTransform
from nlp_ssl.errors import DataError
from nlp_ssl.objectives.simclr import GroupPartners, TwoViewCollator, ViewAugmentation, gaussian_blur
from nlp_ssl.tasks.contrastive import anchors_in, info_nce

MEAN, STD = (0.286,), (0.353,)


# --- the loss ---------------------------------------------------------------------------------------


def test_nt_xent_equals_the_hand_computed_value():
    # Four unit directions (scaled: the loss normalises), pairs (0, 1) and (2, 3), temperature 0.5.
    # Anchor 0 sees cosines 0 (its positive, row 1), -1 (row 2) and 0 (row 3): its loss is
    # -log(e^0 / (e^0 + e^-2 + e^0)) = log(2 + e^-2); by symmetry every anchor's is the same.
    embeddings = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, -0.5]])
    sums = info_nce(embeddings, torch.tensor([0, 0, 1, 1]), temperature=0.5)
    assert sums.anchors == 4
    assert sums.loss.item() == pytest.approx(4 * math.log(2 + math.exp(-2)), rel=1e-6)


def supcon_by_loops(z, groups, tau):
    """SupCon's L_out written out anchor by anchor (SimCLR's NT-Xent when each group is a pair)."""
    z = torch.nn.functional.normalize(z, dim=-1)
    total, anchors, retrieved = 0.0, 0, 0
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if groups[p] == groups[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / tau) for a in others)
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denominator) for p in positives) / len(positives)
        anchors += 1
        retrieved += groups[max(others, key=lambda a: float(z[i] @ z[a]))] == groups[i]
    return total, anchors, retrieved


def test_several_positives_and_lone_rows_follow_supcon():
    torch.manual_seed(0)
    z = torch.randn(9, 5)
    groups = [0, 0, 0, 1, 1, 2, 3, 3, 3]  # row 5 has no positive: a negative for others, not an anchor
    sums = info_nce(z, torch.tensor(groups), temperature=0.3)
    loss, anchors, retrieved = supcon_by_loops(z, groups, 0.3)
    assert sums.anchors == anchors == 8 == anchors_in(torch.tensor(groups))
    assert sums.loss.item() == pytest.approx(loss, rel=1e-5)
    assert sums.retrieved == retrieved


def test_retrieval_counts_anchors_whose_nearest_row_is_a_positive():
    # Rows 0 and 1 are each other's nearest (retrieved); row 2's nearest is row 1, not its positive
    # row 3; row 3's nearest is row 2, its positive.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.3], [-1.0, 1.0]])
    sums = info_nce(z, torch.tensor([0, 0, 1, 1]), temperature=0.1)
    assert sums.anchors == 4 and sums.retrieved == 3


# --- negatives across processes -----------------------------------------------------------------------


def tiny_simclr_task():
    from transformers import ViTConfig, ViTModel

    from nlp_ssl.tasks.vision import SimCLRTask, projection_head

    torch.manual_seed(0)
    config = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, pooler_act="gelu", pooler_output_size=16)
    vit = ViTModel(config)
    return SimCLRTask(vit, projection_head(config, 3, 8), temperature=0.2)


def global_views(examples: int) -> torch.Tensor:
    """Two views per example, rows 2i and 2i + 1 (as TwoViewCollator lays them out)."""
    return torch.randn(2 * examples, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def one_step_gradients(task, batches: list[dict], world: int) -> tuple[dict, float]:
    """The trainer's rule on one process: loss sum / anchors of the whole step on every process × processes."""
    module = getattr(task, "module", task)  # under DDP
    anchors = sum(module.count_items(b)["loss"] for b in batches)
    if world > 1:
        anchors = torch.as_tensor(anchors, dtype=torch.float32)
        torch.distributed.all_reduce(anchors)
    total = 0.0
    for batch in batches:
        out = task(**batch)
        loss = out["losses"]["loss"][0] / anchors * world
        loss.backward()
        total += float(loss.detach()) / world
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}, total


#: Examples of the global micro-batch on each of the two processes: equal, and not (the gather pads).
SPLITS = ([3, 3], [4, 1])


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = []
        for examples_per_rank in SPLITS:
            views = global_views(sum(examples_per_rank))
            start = 2 * sum(examples_per_rank[:rank])
            local = {"pixel_values": views[start : start + 2 * examples_per_rank[rank]]}
            task = DistributedDataParallel(tiny_simclr_task())
            grads, loss = one_step_gradients(task, [local], world)
            total = torch.tensor([loss])
            dist.all_reduce(total)
            results.append({"grads": grads, "loss": float(total)})
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_exactly_like_one_process_on_the_global_micro_batch(tmp_path):
    """Each process holds part of the micro-batch; the negatives are all of it. With the trainer's
    normalisation (× processes, then DDP's average), the gradients equal one process's on all of it."""
    out = tmp_path / "ddp.pt"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), str(out)), nprocs=2)
    for examples_per_rank, got in zip(SPLITS, torch.load(out)):
        views = global_views(sum(examples_per_rank))
        want, loss = one_step_gradients(tiny_simclr_task(), [{"pixel_values": views}], 1)
        assert got["loss"] == pytest.approx(loss, rel=1e-5), examples_per_rank
        assert got["grads"].keys() == want.keys() and len(want) > 10
        scale = max(float(g.abs().max()) for g in want.values())
        for name, grad in want.items():  # float noise only (the key bias's gradient is 0 in exact arithmetic)
            error = float((got["grads"][name] - grad).abs().max())
            assert error <= 1e-4 * float(grad.abs().max()) + 1e-6 * scale, (examples_per_rank, name, error)
        # Without the other process's rows as negatives, the loss would be another number.
        half = {"pixel_values": views[: 2 * examples_per_rank[0]]}
        assert one_step_gradients(tiny_simclr_task(), [half], 1)[1] != pytest.approx(loss, rel=1e-3)


# --- SimCLR's views ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion():
    from nlp_ssl.data.images import load_fashion_mnist

    return load_fashion_mnist("train", cache_dir=None).select(range(60))


def collator(**kwargs) -> TwoViewCollator:
    return TwoViewCollator(28, 1, MEAN, STD, **{"augmentation": ViewAugmentation(), **kwargs})


def test_two_views_differ_and_are_reproducible_from_the_seed(fashion):
    examples = list(fashion.select(range(8)))
    views = collator(seed=3)(examples)["pixel_values"]
    assert views.shape == (16, 1, 28, 28) and views.dtype == torch.float32
    assert all(not torch.equal(views[2 * i], views[2 * i + 1]) for i in range(8))
    assert torch.equal(collator(seed=3)(examples)["pixel_values"], views)
    assert not torch.equal(collator(seed=4)(examples)["pixel_values"], views)
    # Jitter and blur keep pixels in [0, 1] before the normalisation.
    low, high = (0 - MEAN[0]) / STD[0], (1 - MEAN[0]) / STD[0]
    assert views.min() >= low - 1e-5 and views.max() <= high + 1e-5


def test_views_do_not_depend_on_the_batch_and_change_each_epoch(fashion):
    examples = list(fashion.select(range(6)))
    c = collator(seed=0)
    whole = c(examples)["pixel_values"]
    alone = torch.cat([c([example])["pixel_values"] for example in reversed(examples)])
    assert torch.equal(alone, whole.view(6, 2, 1, 28, 28).flip(0).reshape(12, 1, 28, 28))
    c.set_epoch(1)
    assert not torch.equal(c(examples)["pixel_values"], whole)


def test_without_augmentation_both_views_are_the_normalised_image(fashion):
    examples = list(fashion.select(range(3)))
    views = collator(augmentation=None)(examples)["pixel_values"]
    plain = ImageTransform(28, 1, MEAN, STD)
    for i, example in enumerate(examples):
        assert torch.equal(views[2 * i], plain(example["image"])) and torch.equal(views[2 * i + 1], views[2 * i])


def test_colour_jitter_only_for_colour_images():
    gray_image = Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28) % 251, mode="L")
    rgb_image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8), mode="RGB")
    always_gray = ViewAugmentation(grayscale_prob=1.0, blur_prob=0.0)
    rgb = TwoViewCollator(28, 3, augmentation=always_gray)([{"image": rgb_image}])["pixel_values"]
    assert torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-6) and torch.allclose(rgb[:, 1], rgb[:, 2], atol=1e-6)
    no_colour = TwoViewCollator(28, 3, augmentation=ViewAugmentation(grayscale_prob=0.0, saturation=0.0, blur_prob=0.0))
    assert not torch.allclose(no_colour([{"image": rgb_image}])["pixel_values"][:, 0], rgb[:, 0])
    # One channel: the same draws give the same views whatever the colour settings (none apply).
    one = [TwoViewCollator(28, 1, augmentation=ViewAugmentation(grayscale_prob=p, saturation=s))([{"image": gray_image}])
           for p, s in ((0.0, 0.0), (1.0, 0.9))]
    assert torch.equal(one[0]["pixel_values"], one[1]["pixel_values"])


def test_blur_is_a_gaussian_with_reflected_edges():
    x = torch.rand(3, 12, 9, generator=torch.Generator().manual_seed(0))
    sigma, radius = 0.8, 3
    offsets = torch.arange(-radius, radius + 1).float()
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = torch.nn.functional.pad(x[None], (radius,) * 4, mode="reflect")
    expected = sum(kernel[i] * kernel[j] * padded[0, :, i : i + 12, j : j + 9]
                   for i in range(2 * radius + 1) for j in range(2 * radius + 1))
    torch.testing.assert_close(gaussian_blur(x, sigma), expected)


def test_bad_augmentation_settings_are_config_errors():
    from nlp_ssl.errors import ConfigError

    with pytest.raises(ConfigError, match="crop_scale"):
        ViewAugmentation(crop_scale=[0.5, 0.2])
    with pytest.raises(ConfigError, match="blur_prob"):
        ViewAugmentation(blur_prob=1.5)


# --- MICLe --------------------------------------------------------------------------------------------


def grouped(fashion, groups):
    """Fashion-MNIST images with a synthetic case id (``None``: no case)."""
    return datasets.Dataset.from_dict({"image": list(fashion["image"])[: len(groups)], "case": groups},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "case": datasets.Value("int64")}))


def test_micle_pairs_are_two_different_images_of_one_group(fashion):
    groups = [i // 4 for i in range(40)] + [100, None]  # ten cases of four images, one lone image, one without
    data = grouped(fashion, groups)
    plain = ImageTransform(28, 1, MEAN, STD)
    images = [plain(image) for image in data["image"]]
    partners = GroupPartners(data, "case")
    assert partners.groups_with_pairs == 10
    c = collator(augmentation=None, partners=partners, seed=5)
    views = c(list(data))["pixel_values"]
    chosen = []
    for i, group in enumerate(groups):
        assert torch.equal(views[2 * i], images[i])
        match = [j for j, image in enumerate(images) if torch.equal(views[2 * i + 1], image)]
        assert len(match) == 1, i
        if group is None or group == 100:
            assert match == [i]  # no other image of its case: its own, as in SimCLR
        else:
            assert match[0] != i and groups[match[0]] == group
        chosen.append(match[0])
    assert len(set(chosen[:40])) > 20  # partners are drawn, not always the first of the case
    # Seeded per example: the same partners in any batch; others next epoch.
    alone = torch.cat([c([example])["pixel_values"] for example in list(data)[:8]])
    assert torch.equal(alone, views[:16])
    c.set_epoch(1)
    assert not torch.equal(c(list(data))["pixel_values"], views)


def test_micle_names_a_missing_group_column(fashion):
    with pytest.raises(DataError, match="group column 'patient' not found"):
        GroupPartners(grouped(fashion, [0, 0]), "patient")
