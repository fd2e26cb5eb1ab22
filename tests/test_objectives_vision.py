import gzip
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from nlp_ssl.data.image_transforms import ImageTransform, random_resized_crop_box
from nlp_ssl.data.images import FASHION_MNIST_CLASSES, load_fashion_mnist, load_image_dataset, load_image_folder
from nlp_ssl.errors import DataError
from nlp_ssl.objectives.image_classification import ImageClassificationCollator
from nlp_ssl.objectives.mim import MaskedImageCollator
from nlp_ssl.objectives.rotation import RotationCollator


def asymmetric_image(size=8, value=0):
    """A grayscale image with no rotational or mirror symmetry: a gradient plus one bright corner pixel."""
    pixels = (np.arange(size * size, dtype=np.uint8).reshape(size, size) * 3 + value) % 200
    pixels[0, size - 1] = 255  # top-right corner
    return Image.fromarray(pixels, mode="L")


def random_images(n, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L")} for _ in range(n)]


# --- rotation -----------------------------------------------------------------------------------


def test_rotation_all_gives_four_labelled_rotations_that_undo_to_the_original():
    examples = [{"image": asymmetric_image(value=v)} for v in (0, 7, 50)]
    batch = RotationCollator(8, num_channels=1, mode="all")(examples)
    assert batch["pixel_values"].shape == (12, 1, 8, 8)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == [0, 1, 2, 3] * 3
    for i, k in enumerate(batch["labels"].tolist()):
        upright = batch["pixel_values"][4 * (i // 4)]
        rotated = batch["pixel_values"][i]
        assert torch.equal(torch.rot90(rotated, -k, dims=(-2, -1)), upright)
        if k:
            assert not torch.equal(rotated, upright)
    # label 1 is a quarter turn counter-clockwise: the top-right corner moves to the top-left
    upright, quarter = batch["pixel_values"][0, 0], batch["pixel_values"][1, 0]
    assert upright[0, 7] == upright.max() and quarter[0, 0] == upright.max()
    # and label 3 is clockwise: the top-right corner moves to the bottom-right
    assert batch["pixel_values"][3, 0][7, 7] == upright.max()


def test_rotation_one_samples_a_rotation_per_image_deterministically():
    examples = [{"image": asymmetric_image(value=v)} for v in range(40)]
    upright = RotationCollator(8, num_channels=1, mode="all")(examples)["pixel_values"][::4]
    collator = RotationCollator(8, num_channels=1, mode="one", seed=3)
    batch = collator(examples)
    assert batch["pixel_values"].shape == (40, 1, 8, 8)
    assert set(batch["labels"].tolist()) == {0, 1, 2, 3}
    for x, k, up in zip(batch["pixel_values"], batch["labels"].tolist(), upright):
        assert torch.equal(torch.rot90(x, -k, dims=(-2, -1)), up)
    again = RotationCollator(8, num_channels=1, mode="one", seed=3)(examples)
    assert torch.equal(again["labels"], batch["labels"])
    assert torch.equal(again["pixel_values"], batch["pixel_values"])
    other_seed = RotationCollator(8, num_channels=1, mode="one", seed=4)(examples)
    assert not torch.equal(other_seed["labels"], batch["labels"])


def test_rotation_resizes_non_square_images_and_rejects_non_square_transforms():
    wide = Image.fromarray(np.tile(np.arange(12, dtype=np.uint8) * 20, (6, 1)), mode="L")
    batch = RotationCollator(8, num_channels=3, mode="all")([{"image": wide}])
    assert batch["pixel_values"].shape == (4, 3, 8, 8)
    # left-to-right gradient survives the resize, so the 180-degree copy runs right-to-left
    row = batch["pixel_values"][0, 0, 4]
    assert (row[1:] > row[:-1]).all()

    class Stretch(ImageTransform):
        def __call__(self, image, generator=None):
            return torch.zeros(1, 8, 6)

    with pytest.raises(DataError, match=r"shape \(1, 8, 6\).*square"):
        RotationCollator(8, num_channels=1, transform=Stretch(8, 1))([{"image": wide}])


def test_rotation_rejects_unknown_mode_and_missing_image_field():
    with pytest.raises(ValueError, match="'both'"):
        RotationCollator(8, mode="both")
    with pytest.raises(DataError, match="'image'"):
        RotationCollator(8)([{"pixels": asymmetric_image()}])


# --- SimMIM masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image_size, model_patch, mask_patch, ratio, expected_blocks",
    [(32, 4, 8, 0.6, 10), (28, 4, 4, 0.6, 29), (28, 7, 14, 0.5, 2), (28, 2, 14, 0.75, 3)],
)
def test_mim_masks_exact_ratio_aligned_to_mask_blocks(image_size, model_patch, mask_patch, ratio, expected_blocks):
    collator = MaskedImageCollator(image_size, model_patch, mask_patch, ratio, num_channels=1)
    batch = collator(random_images(6, image_size))
    grid, scale, coarse = image_size // model_patch, mask_patch // model_patch, image_size // mask_patch
    mask = batch["bool_masked_pos"]
    assert mask.dtype == torch.bool and mask.shape == (6, grid * grid)
    assert batch["pixel_values"].shape == (6, 1, image_size, image_size)
    blocks = mask.view(6, coarse, scale, coarse, scale).permute(0, 1, 3, 2, 4).reshape(6, coarse * coarse, -1)
    assert (blocks.all(-1) | ~blocks.any(-1)).all(), "a mask block is partly masked"
    assert blocks.all(-1).sum(1).tolist() == [expected_blocks] * 6
    assert mask.sum(1).tolist() == [expected_blocks * scale * scale] * 6
    assert len({tuple(row.tolist()) for row in mask}) > 1, "every image got the same mask"


def test_mim_sizes_that_do_not_divide_are_rejected_with_the_values():
    with pytest.raises(ValueError, match="mask_patch_size 8 must divide image_size 28"):
        MaskedImageCollator(28, 4, 8)
    with pytest.raises(ValueError, match="model_patch_size 3 must divide mask_patch_size 8"):
        MaskedImageCollator(32, 3, 8)
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedImageCollator(32, 4, 8, mask_ratio=1.0)
    with pytest.raises(ValueError, match="rounds to 0"):
        MaskedImageCollator(28, 7, 28, mask_ratio=0.4)


def test_collators_are_deterministic_given_seed_and_batch():
    examples = random_images(5)
    for make in (
        lambda seed: MaskedImageCollator(28, 4, 4, num_channels=1, seed=seed, augment=True),
        lambda seed: RotationCollator(28, num_channels=1, mode="one", seed=seed, augment=True),
    ):
        first, second, other = make(0)(examples), make(0)(examples), make(1)(examples)
        for key in first:
            assert torch.equal(first[key], second[key]), key
        assert any(not torch.equal(first[key], other[key]) for key in first)
    # the randomness follows the batch content, not the call order
    collator = MaskedImageCollator(28, 4, 4, num_channels=1)
    a = collator(examples)["bool_masked_pos"]
    collator(random_images(5, seed=9))
    assert torch.equal(collator(examples)["bool_masked_pos"], a)


def per_example(batch, n, key_rows):
    """Split each output tensor into the rows of each of the n examples (rows per example from key_rows)."""
    return [{k: v[i * key_rows[k]:(i + 1) * key_rows[k]] for k, v in batch.items()} for i in range(n)]


def aux_collator(aux):
    import datasets

    from nlp_ssl.objectives.image_classification import PretextAuxCollator
    from nlp_ssl.objectives.mim import MaskedAuxViews
    from nlp_ssl.objectives.rotation import RotationAuxViews

    pool = datasets.Dataset.from_dict({"image": [e["image"] for e in random_images(5, seed=4)]},
                                      features=datasets.Features({"image": datasets.Image()}))
    views = MaskedAuxViews(MaskedImageCollator(28, 4, 4, 0.5, num_channels=1)) if aux == "mim" else RotationAuxViews()
    cls = ImageClassificationCollator(28, num_channels=1, seed=2, augment=True)
    return PretextAuxCollator(cls, views, pool=pool, pool_per_image=2)


COLLATORS = {  # name: (make collator, output rows per example of each key)
    "classification": (lambda: ImageClassificationCollator(28, num_channels=1, seed=2, augment=True),
                       {"pixel_values": 1, "labels": 1}),
    "rotation_one": (lambda: RotationCollator(28, num_channels=1, mode="one", seed=2, augment=True),
                     {"pixel_values": 1, "labels": 1}),
    "rotation_all": (lambda: RotationCollator(28, num_channels=1, mode="all", seed=2, augment=True),
                     {"pixel_values": 4, "labels": 4}),
    "mim": (lambda: MaskedImageCollator(28, 4, 4, 0.5, num_channels=1, seed=2, augment=True),
            {"pixel_values": 1, "bool_masked_pos": 1}),
    "aux_rotation": (lambda: aux_collator("rotation"),
                     {"pixel_values": 1, "labels": 1, "aux_pixel_values": 3, "aux_labels": 3}),
    "aux_mim": (lambda: aux_collator("mim"),
                {"pixel_values": 1, "labels": 1, "aux_pixel_values": 3, "aux_bool_masked_pos": 3}),
}


@pytest.mark.parametrize("name", list(COLLATORS))
def test_collators_draw_per_example_under_any_batching_and_anew_each_epoch(name):
    make, rows = COLLATORS[name]
    examples = [{**e, "label": i % 10} for i, e in enumerate(random_images(8))]
    collator = make()
    whole = per_example(collator(examples), 8, rows)
    singles = [per_example(collator([e]), 1, rows)[0] for e in examples]
    order = np.random.default_rng(0).permutation(8)
    shuffled = [examples[i] for i in order]
    fours = [*per_example(collator(shuffled[:4]), 4, rows), *per_example(collator(shuffled[4:]), 4, rows)]
    for i in range(8):
        for key in rows:
            assert torch.equal(whole[i][key], singles[i][key]), (key, i)
            assert torch.equal(whole[i][key], fours[list(order).index(i)][key]), (key, i)
    # A fresh collator (another worker, a resumed run) draws the same; another epoch draws anew.
    again = per_example(make()(examples), 8, rows)
    assert all(torch.equal(whole[i][k], again[i][k]) for i in range(8) for k in rows)
    collator.set_epoch(1)
    next_epoch = per_example(collator(examples), 8, rows)
    random_keys = [k for k in rows if k not in ("labels",) or name == "rotation_one"]
    changed = [k for k in random_keys if any(not torch.equal(whole[i][k], next_epoch[i][k]) for i in range(8))]
    assert changed == random_keys, f"unchanged in epoch 1: {set(random_keys) - set(changed)}"
    collator.set_epoch(0)
    assert all(torch.equal(whole[i][k], per_example(collator(examples), 8, rows)[i][k]) for i in range(8) for k in rows)


# --- transforms and loaders ------------------------------------------------------------------------


def test_transform_train_crop_flip_seeded_and_eval_normalises():
    image = asymmetric_image(16)
    train = ImageTransform(8, 1, mean=[0.5], std=[0.25], train=True)
    out = [train(image, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert out[0].shape == (1, 8, 8)
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])
    with pytest.raises(ValueError, match="Generator"):
        train(image)
    # a full-image crop followed by a certain flip is the eval image mirrored left-right
    always_flip = ImageTransform(16, 1, train=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=1.0)
    assert torch.equal(always_flip(image, torch.Generator()), ImageTransform(16, 1)(image).flip(-1))
    flat = Image.new("L", (5, 9), 204)
    assert torch.allclose(ImageTransform(4, 1, mean=[0.5], std=[0.25])(flat), torch.full((1, 4, 4), 1.2))
    with pytest.raises(ValueError, match="one per channel"):
        ImageTransform(8, 3, mean=[0.1, 0.2])
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(10, 30, g, scale=(0.3, 1.0))
        assert 0 <= top and top + h <= 10 and 0 <= left and left + w <= 30 and h > 0 and w > 0


def test_image_folder_non_image_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    asymmetric_image().save(tmp_path / "cats" / "a.png")
    asymmetric_image().save(tmp_path / "dogs" / "b.png")
    (tmp_path / "dogs" / ".DS_Store").write_bytes(b"\0junk")  # hidden files are ignored
    assert load_image_folder(tmp_path).num_rows == 2
    (tmp_path / "dogs" / "notes.txt").write_text("not a picture")
    with pytest.raises(DataError, match=r"dogs/notes\.txt is not an image"):
        load_image_folder(tmp_path)
    with pytest.raises(DataError, match="no such directory"):
        load_image_folder(tmp_path / "missing")


def test_image_folder_mixed_modes_give_the_model_channel_count(tmp_path):
    modes = {
        "gray": Image.new("L", (10, 12), 200),
        "rgb": Image.new("RGB", (28, 28), (255, 0, 0)),
        "rgba": Image.new("RGBA", (30, 20), (255, 255, 255, 0)),  # fully transparent
        "palette": Image.new("RGB", (16, 16), (0, 0, 255)).convert("P"),
        "gray_alpha": Image.new("LA", (8, 8), (100, 255)),
        "sixteen_bit": Image.fromarray(np.full((8, 8), 128 * 257, dtype=np.uint16)),
    }
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    for i, (name, image) in enumerate(modes.items()):
        image.save(tmp_path / ("a" if i % 2 else "b") / f"{name}.png")
    dataset = load_image_folder(tmp_path)
    assert dataset.features["label"].names == ["a", "b"]
    decoded_modes = {dataset[i]["image"].mode for i in range(len(dataset))}
    assert {"L", "RGB", "RGBA", "P", "LA"} <= decoded_modes and decoded_modes & {"I", "I;16"}
    paths = dataset.cast_column("image", datasets.Image(decode=False))["image"]
    stem = {Path(row["path"]).stem: i for i, row in enumerate(paths)}
    for channels in (1, 3):
        collator = ImageClassificationCollator(14, num_channels=channels, mean=[0.0], std=[1.0])
        batch = collator([dataset[i] for i in range(len(dataset))])
        assert batch["pixel_values"].shape == (len(modes), channels, 14, 14)
        assert batch["labels"].tolist() == dataset["label"]
        pv = batch["pixel_values"]
        assert torch.allclose(pv[stem["gray"]], torch.full((channels, 14, 14), 200 / 255))
        assert torch.allclose(pv[stem["rgba"]], torch.zeros(channels, 14, 14))  # transparent → black
        assert torch.allclose(pv[stem["sixteen_bit"]], torch.full((channels, 14, 14), 128 / 255))  # scaled, not clipped
        if channels == 3:
            assert torch.allclose(pv[stem["rgb"]][:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
            assert torch.allclose(pv[stem["palette"]][:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
        else:
            assert torch.allclose(pv[stem["rgb"]], torch.full((1, 14, 14), 76 / 255))  # PIL's luma of red


def test_classification_collator_rejects_non_integer_labels():
    collator = ImageClassificationCollator(8, num_channels=1)
    assert collator([{"image": asymmetric_image(), "label": np.int64(3)}])["labels"].tolist() == [3]
    with pytest.raises(DataError, match="'label' must be an integer class id, got 'cat'"):
        collator([{"image": asymmetric_image(), "label": "cat"}])


def write_idx(path, magic, array):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_parses_idx_files_and_caches(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28))
    write_idx(raw / "t10k-images-idx3-ubyte.gz", 2051, images)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", 2049, np.array([9, 0, 4]))
    dataset = load_fashion_mnist("test", tmp_path / "cache", root=raw)
    assert dataset["label"] == [9, 0, 4]
    assert dataset.features["label"].names[9] == "Ankle boot"
    assert np.array_equal(np.asarray(dataset[1]["image"]), images[1])
    assert (tmp_path / "cache" / "fashion_mnist" / "test").is_dir()
    (raw / "t10k-images-idx3-ubyte.gz").unlink()  # the cache no longer needs the raw files
    assert load_fashion_mnist("test", tmp_path / "cache", root=raw)["label"] == [9, 0, 4]
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=raw)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", 2049, images)
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        load_fashion_mnist("test", root=raw)
    with pytest.raises(DataError, match="'validation'"):
        load_fashion_mnist("validation")


@pytest.mark.slow
def test_fashion_mnist_full_dataset(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs `apt-get install dataset-fashion-mnist`")
    train = load_fashion_mnist("train", tmp_path)
    test = load_image_dataset("fashion-mnist", split="test", cache_dir=tmp_path)
    assert (train.num_rows, test.num_rows) == (60000, 10000)
    assert train.features["label"].names == list(FASHION_MNIST_CLASSES)
    assert np.bincount(train["label"]).tolist() == [6000] * 10
    assert train[0]["image"].size == (28, 28) and train[0]["image"].mode == "L"
    start = time.perf_counter()
    assert load_fashion_mnist("train", tmp_path).num_rows == 60000
    assert time.perf_counter() - start < 5


def test_load_image_dataset_dispatches_and_standardises_columns(tmp_path):
    digits = load_image_dataset("digits")
    assert digits.num_rows == 1797 and digits.features["label"].num_classes == 10
    assert digits[0]["image"].size == (8, 8)
    renamed = digits.select(range(4)).rename_columns({"image": "img", "label": "fine_label"})
    renamed.save_to_disk(str(tmp_path / "saved"))
    loaded = load_image_dataset(str(tmp_path / "saved"))
    assert set(loaded.column_names) == {"image", "label"}
    assert loaded["label"] == digits["label"][:4]
    with pytest.raises(DataError, match="no such folder"):
        load_image_dataset(str(tmp_path / "nope"))


def test_an_image_source_that_cannot_be_loaded_is_named_by_its_key():
    from nlp_ssl.data.image_splits import ImagePoolConfig, LabeledImagesConfig, labelled_splits, load_image_pool

    offline = "nobody/nonexistent-ds: not a local folder, and HF_HUB_OFFLINE=1 is set with no copy of it in the datasets cache"
    with pytest.raises(DataError, match=f"^data.source {offline}$"):  # pretrain_vit
        load_image_pool(ImagePoolConfig(source="nobody/nonexistent-ds"), seed=0)
    with pytest.raises(DataError, match=f"^data.test_source {offline}$"):  # finetune_vision
        labelled_splits(LabeledImagesConfig(source="digits", test_source="nobody/nonexistent-ds", k_per_class=2), seed=0)


# --- tasks vs transformers -----------------------------------------------------------------------


def tiny_vit(patch_size, num_channels=1, **extra):
    from transformers import ViTConfig

    return ViTConfig(
        image_size=28, patch_size=patch_size, encoder_stride=patch_size, num_channels=num_channels, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, **extra,
    )


def test_classification_task_loss_sum_matches_transformers():
    from transformers import ViTForImageClassification

    from nlp_ssl.tasks.vision import ImageClassificationTask

    torch.manual_seed(0)
    task = ImageClassificationTask(ViTForImageClassification(tiny_vit(4, num_labels=4))).eval()
    batch = RotationCollator(28, num_channels=1, mode="all")(random_images(3))
    out = task(**batch)
    loss_sum, count = out["losses"]["loss"]
    assert count.item() == 12 == task.count_items(batch)["loss"].item()
    reference = task.model(pixel_values=batch["pixel_values"], labels=batch["labels"])
    assert torch.allclose(loss_sum / count, reference.loss, rtol=1e-5, atol=1e-6)
    correct, total = out["metrics"]["accuracy"]
    assert correct.item() == (reference.logits.argmax(-1) == batch["labels"]).sum().item() and total.item() == 12
    loss_sum.backward()
    assert task.model.classifier.weight.grad is not None


def test_masked_image_modeling_task_loss_sum_matches_transformers():
    from transformers import ViTForMaskedImageModeling

    from nlp_ssl.tasks.vision import MaskedImageModelingTask

    torch.manual_seed(0)
    for patch, mask_patch, channels in ((4, 4, 1), (7, 14, 3)):
        task = MaskedImageModelingTask(ViTForMaskedImageModeling(tiny_vit(patch, channels))).eval()
        batch = MaskedImageCollator(28, patch, mask_patch, 0.5, num_channels=channels)(random_images(3))
        loss_sum, count = task(**batch)["losses"]["loss"]
        assert count.item() == batch["bool_masked_pos"].sum().item() * patch * patch * channels
        assert count.item() == task.count_items(batch)["loss"].item()
        reference = task.model(**batch).loss
        assert torch.allclose(loss_sum / count, reference, rtol=1e-4)
        # the sum covers exactly the masked pixels, every channel, found here independently
        with torch.no_grad():
            error = (task.model(**batch).reconstruction - batch["pixel_values"]).abs()
        grid = 28 // patch
        pixel_mask = torch.zeros_like(error, dtype=torch.bool)
        for b, position in batch["bool_masked_pos"].nonzero().tolist():
            row, col = divmod(position, grid)
            pixel_mask[b, :, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch] = True
        assert torch.allclose(loss_sum, error[pixel_mask].sum(), rtol=1e-5)
    with pytest.raises(DataError, match="bool_masked_pos has shape"):
        task(pixel_values=batch["pixel_values"], bool_masked_pos=batch["bool_masked_pos"][:, :5])
