"""The image datasets the ViT recipes train on: an unlabelled pool with a held-out validation set for
pretraining, and k labelled images per class (plus validation and test) for few-label fine-tuning.

The few-label draw is :func:`nlp_ssl.data.labels.few_label_split`, the same as for text, so the
study's pixel baseline and every fine-tuning run of one seed see exactly the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nlp_ssl.config import check_ranges
from nlp_ssl.data.cache import cache_root
from nlp_ssl.data.holdout import first_rows
from nlp_ssl.data.images import load_image_dataset
from nlp_ssl.data.labels import few_label_split
from nlp_ssl.errors import ConfigError, DataError

#: Added to ``seed`` for the validation draw: the validation images of one seed do not depend on k.
VALIDATION_SEED_OFFSET = 1_000_003


@dataclass
class ImagePoolConfig:
    """The unlabelled images a pretext task learns from, and the rows held out to evaluate it."""

    #: ``fashion_mnist``, ``digits``, an image folder, a ``save_to_disk`` folder or a Hub dataset.
    source: str = "fashion_mnist"
    split: str = "train"
    image_column: str | None = None
    #: Images carved out (seeded) for validation.
    validation_images: int = 2000
    max_train_images: int | None = None
    #: Random resized crop + horizontal flip on training images.
    augment: bool = False
    cache_dir: str | None = None

    def __post_init__(self):
        check_ranges(self, validation_images="(0, inf)", max_train_images="(0, inf)")


@dataclass
class LabeledImagesConfig:
    """The labelled images: where they come from, k per class, and the validation and test rows."""

    #: ``fashion_mnist``, ``digits``, an image folder with class sub-folders, a ``save_to_disk`` folder or Hub name.
    source: str = "fashion_mnist"
    train_split: str = "train"
    test_split: str = "test"
    #: Another source for the test images (default: ``source`` at ``test_split``).
    test_source: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    #: Labelled training images per class (seeded by ``seed``).
    k_per_class: int = 100
    #: Extra labelled images per class for validation, disjoint from the training ones (None: max(2, k // 5)).
    validation_per_class: int | None = None
    #: Score on a seeded random subset of the test split (None: all of it).
    max_test_images: int | None = None
    augment: bool = True
    cache_dir: str | None = None

    def __post_init__(self):
        check_ranges(self, k_per_class="(0, inf)", validation_per_class="[0, inf)", max_test_images="(0, inf)")


def load_images(source: str, split: str, cache_dir: str | None, image_column: str | None = None, label_column: str | None = None,
                key: str = "data.source"):
    """Any image source as a Dataset with an ``image`` column (and ``label`` when it has one); errors name ``key``."""
    root = cache_root(cache_dir)
    return load_image_dataset(source, split, cache_dir=root, image_column=image_column, label_column=label_column, key=key)


def load_image_pool(data: ImagePoolConfig, seed: int, extra_columns: Sequence[str] = ()):
    """``{"train", "validation"}`` of unlabelled images (labels, if any, are dropped); ``extra_columns``
    (e.g. a case id for MICLe) are kept."""
    from datasets import DatasetDict

    pool = load_images(data.source, data.split, data.cache_dir, data.image_column)
    missing = [c for c in extra_columns if c not in pool.column_names]
    if missing:
        raise DataError(f"data.source {data.source}: column {missing[0]!r} not found; columns are {pool.column_names}")
    pool = pool.select_columns(["image", *extra_columns])
    if data.validation_images <= 0:
        raise ConfigError(f"data.validation_images must be positive, got {data.validation_images}")
    if data.validation_images >= len(pool):
        raise DataError(
            f"data.source {data.source}: {len(pool)} images, not enough to hold out "
            f"data.validation_images={data.validation_images} for validation"
        )
    splits = pool.train_test_split(test_size=data.validation_images, seed=seed, shuffle=True)
    return DatasetDict(train=first_rows(splits["train"], data.max_train_images), validation=splits["test"])


def validation_per_class(data: LabeledImagesConfig) -> int:
    return data.validation_per_class if data.validation_per_class is not None else max(2, data.k_per_class // 5)


def labelled_splits(data: LabeledImagesConfig, seed: int, unlabelled: bool = False):
    """``{"train", "validation", "test"}``: k and v images per class from the pool, and the test split.

    ``unlabelled``: also ``"unlabelled"``, the pool's images without their labels and without the
    validation images (the k training images stay in it, as in any semi-supervised setting), for an
    auxiliary pretext loss on unlabelled images.
    """
    import numpy as np
    from datasets import ClassLabel, DatasetDict

    if data.k_per_class <= 0:
        raise ConfigError(f"data.k_per_class must be a positive integer, got {data.k_per_class}")
    n_val = validation_per_class(data)
    if n_val <= 0:
        raise ConfigError(f"data.validation_per_class must be a positive integer, got {n_val}")
    pool = load_images(data.source, data.train_split, data.cache_dir, data.image_column, data.label_column)
    if "label" not in pool.column_names or not isinstance(pool.features["label"], ClassLabel):
        raise DataError(
            f"data.source {data.source}: no class-label column (columns: {', '.join(pool.column_names)}); "
            "set data.label_column, or use an image folder with one sub-folder per class"
        )
    pool = pool.select_columns(["image", "label"])
    if unlabelled:  # the row of every image, to take the validation images out of the unlabelled pool
        pool = pool.add_column("row", np.arange(len(pool)))
    train, validation = few_label_split(
        pool, data.k_per_class, n_val, seed, seed + VALIDATION_SEED_OFFSET, where=f"data.source {data.source}"
    )
    extra = {}
    if unlabelled:
        keep = np.setdiff1d(np.arange(len(pool)), np.asarray(validation["row"]))
        extra["unlabelled"] = pool.select(keep).select_columns(["image"])
        train, validation = train.remove_columns("row"), validation.remove_columns("row")
    test = load_images(data.test_source or data.source, data.test_split, data.cache_dir, data.image_column, data.label_column,
                       key="data.test_source" if data.test_source else "data.source")
    if "label" not in test.column_names:
        raise DataError(f"data.test_source {data.test_source or data.source}: the test split has no labels")
    if test.features["label"] != pool.features["label"]:
        raise DataError(
            f"data: the test split's classes {test.features['label'].names} differ from the training pool's "
            f"{pool.features['label'].names}"
        )
    test = test.select_columns(["image", "label"])
    if data.max_test_images and data.max_test_images < len(test):
        test = test.shuffle(seed=seed).select(range(data.max_test_images))
    return DatasetDict(train=train, validation=validation, test=test, **extra)
