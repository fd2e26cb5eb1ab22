"""Images into 🤗 datasets (the transforms the vision collators apply are in :mod:`nlp_ssl.data.image_transforms`).

Every loader returns a ``datasets.Dataset`` with an ``image`` column (a ``datasets.Image()``
feature, decoded to PIL) and, when the source has labels, a ``label`` ClassLabel column. So the
collators in ``nlp_ssl.objectives`` see one schema whatever the source.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nlp_ssl.errors import DataError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: Per-channel mean and std of the 60,000 Fashion-MNIST training images, pixels scaled to [0, 1].
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


# ----------------------------------------------------------------------------------------------
# Loaders


def _image_features(class_names: Sequence[str] | None):
    import datasets

    features = {"image": datasets.Image()}
    if class_names is not None:
        features["label"] = datasets.ClassLabel(names=list(class_names))
    return datasets.Features(features)


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _check_image_file(path: Path) -> None:
    """Read the file's header only, so a stray text or archive file fails here and not mid-epoch."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - the header is parsed lazily
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(
            f"image folder: {path} is not an image PIL can read ({err.__class__.__name__}); "
            "remove it or move it out of the folder"
        ) from None


def load_image_folder(path: str | os.PathLike, check_files: bool = True):
    """Load a folder of images; each sub-folder is a class, named after the sub-folder.

    Layout ``root/<class>/**/<image>`` gives a ``label`` ClassLabel with the sub-folder names in
    sorted order; a folder with no sub-folders gives an unlabelled dataset (``image`` only).
    Hidden files (name starting with ``.``, e.g. ``.DS_Store``) are ignored. Any other file that is
    not an image raises a ``DataError`` naming it, rather than being skipped with a warning: a
    silently dropped file is a silently wrong dataset. ``check_files=False`` skips opening each
    file up front (faster on very large folders); bad files then fail when decoded.
    Images of any size and PIL mode may be mixed; the transforms make them uniform.
    """
    import datasets

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root}: no such directory")
    entries = sorted(p for p in root.iterdir() if not _is_hidden(p))
    class_dirs = [p for p in entries if p.is_dir()]
    files: list[Path] = []
    labels: list[int] = []
    if class_dirs:
        stray = [p for p in entries if not p.is_dir()]
        if stray:
            raise DataError(
                f"image folder {root}: {stray[0]} sits next to the class sub-folders "
                f"({', '.join(p.name for p in class_dirs[:5])}); put every image in a class sub-folder"
            )
        for label, class_dir in enumerate(class_dirs):
            for file in sorted(class_dir.rglob("*")):
                hidden = any(part.startswith(".") for part in file.relative_to(class_dir).parts)
                if file.is_file() and not hidden:
                    files.append(file)
                    labels.append(label)
    else:
        files = [p for p in entries if p.is_file()]
    if not files:
        raise DataError(f"image folder {root}: no image files found")
    if check_files:
        for file in files:
            _check_image_file(file)
    class_names = [p.name for p in class_dirs] if class_dirs else None
    columns = {"image": [str(f) for f in files]}
    if class_names is not None:
        columns["label"] = labels
    return datasets.Dataset.from_dict(columns, features=_image_features(class_names))


def _read_idx(path: Path, magic: int, offset: int) -> np.ndarray:
    """Parse one gzip IDX file (the MNIST format): big-endian header, then uint8 data."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise DataError(f"fashion_mnist: cannot read {path}: {err}") from None
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise DataError(f"fashion_mnist: {path} has magic number {found}, expected {magic} (not an IDX file?)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range((offset - 4) // 4)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if data.size != math.prod(dims):
        raise DataError(f"fashion_mnist: {path} holds {data.size} bytes of data, header says {dims}")
    return data.reshape(dims)


def _pgm_bytes(pixels: np.ndarray) -> bytes:
    """Binary PGM: lossless like PNG but needs no compression, so 70,000 images encode in a second."""
    height, width = pixels.shape
    return b"P5 %d %d 255\n" % (width, height) + pixels.tobytes()


def _build_fashion_mnist(split: str, root: Path):
    import datasets

    image_file, label_file = (root / name for name in _FASHION_MNIST_FILES[split])
    missing = [str(p) for p in (image_file, label_file) if not p.is_file()]
    if missing:
        raise DataError(
            f"fashion_mnist: {missing[0]} not found; install it with "
            "`apt-get install dataset-fashion-mnist` (or see data_scripts/prepare_fashion_mnist.py "
            "for the Hub copy)"
        )
    images = _read_idx(image_file, 2051, 16)
    labels = _read_idx(label_file, 2049, 8)
    if len(images) != len(labels):
        raise DataError(f"fashion_mnist: {image_file} has {len(images)} images but {label_file} {len(labels)} labels")
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"fashion_mnist: {label_file} has label {int(labels.max())}, expected 0..9")
    columns = {
        "image": [{"bytes": _pgm_bytes(x), "path": None} for x in images],
        "label": labels.astype(np.int64),
    }
    return datasets.Dataset.from_dict(columns, features=_image_features(FASHION_MNIST_CLASSES))


def load_fashion_mnist(
    split: str = "train", cache_dir: str | os.PathLike | None = None, root: str | os.PathLike = FASHION_MNIST_DIR
):
    """Fashion-MNIST (28x28 grayscale, 10 classes) from the Debian ``dataset-fashion-mnist`` files.

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000). With ``cache_dir`` the dataset
    is written once with ``save_to_disk`` under ``cache_dir/fashion_mnist/<split>`` (atomically, so
    concurrent processes never read half a cache) and later calls just memory-map it.
    """
    import datasets

    if split not in _FASHION_MNIST_FILES:
        raise DataError(f"fashion_mnist: split {split!r} does not exist; use one of {sorted(_FASHION_MNIST_FILES)}")
    if cache_dir is None:
        return _build_fashion_mnist(split, Path(root))
    target = Path(cache_dir) / "fashion_mnist" / split
    if not target.is_dir():
        dataset = _build_fashion_mnist(split, Path(root))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{split}-", dir=target.parent))
        try:
            dataset.save_to_disk(str(staging))
            try:
                staging.rename(target)
            except OSError:
                if not target.is_dir():  # lost a race to another process: theirs is as good as ours
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(str(target))


def load_digits_dataset():
    """scikit-learn's 1,797 handwritten digits (8x8 grayscale, labels "0".."9"): tiny, for tests.

    The 0..16 intensities are scaled to 0..255. There is no train/test split; split it yourself
    (``dataset.train_test_split``).
    """
    import datasets
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    columns = {
        "image": [{"bytes": _pgm_bytes(x), "path": None} for x in pixels],
        "label": digits.target.astype(np.int64),
    }
    return datasets.Dataset.from_dict(columns, features=_image_features([str(i) for i in range(10)]))


def _standardise_columns(dataset, where: str, image_column: str | None, label_column: str | None):
    """Rename the source's image and label columns to ``image`` and ``label``; drop nothing else."""
    import datasets

    features = dataset.features
    if image_column is None:
        image_columns = [name for name, f in features.items() if isinstance(f, datasets.Image)]
        if not image_columns:
            raise DataError(f"{where}: no column has the Image feature; columns are {list(features)}")
        image_column = "image" if "image" in image_columns else image_columns[0]
    elif image_column not in features:
        raise DataError(
            f"{where}: image_column {image_column!r} not found; columns are {list(features)}"
        )
    if label_column is None:
        label_column = next((c for c in ("label", "labels") if c in features), None)
        if label_column is None:
            label_column = next((n for n, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    elif label_column not in features:
        raise DataError(
            f"{where}: label_column {label_column!r} not found; columns are {list(features)}"
        )
    renames = {}
    for old, new in ((image_column, "image"), (label_column, "label")):
        if old is not None and old != new:
            if new in features:
                dataset = dataset.remove_columns(new)
            renames[old] = new
    if renames:
        dataset = dataset.rename_columns(renames)
    if not isinstance(dataset.features["image"], datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image())
    return dataset


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()


def load_image_dataset(
    source: str,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    key: str = "data.source",
):
    """One entry point for every image source, picked from the ``source`` string; errors name ``key``.

    - ``"fashion_mnist"``: :func:`load_fashion_mnist` (``split`` = train/test, cached in ``cache_dir``);
    - ``"digits"``: :func:`load_digits_dataset` (the whole set; ``split`` is ignored);
    - a folder written by ``save_to_disk`` (a Dataset, or a DatasetDict from which ``split`` is taken);
    - any other folder: :func:`load_image_folder`;
    - otherwise a Hub dataset name, loaded with ``datasets.load_dataset(source, split=split)``.

    The image column (``image_column``, else ``image``, else the first Image-feature column) becomes
    ``image`` and the label column (``label_column``, else ``label``/``labels``, else the first
    ClassLabel) becomes ``label``.
    """
    import datasets

    where = f"{key} {source}"
    builtin = source.strip().lower().replace("-", "_")
    if builtin == "fashion_mnist":
        return load_fashion_mnist(split, cache_dir)
    if builtin == "digits":
        return load_digits_dataset()
    path = Path(source).expanduser()
    if path.is_dir():
        if _is_saved_dataset(path):
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise DataError(f"{where}: split {split!r} not found; it has {list(dataset)}")
                dataset = dataset[split]
            return _standardise_columns(dataset, where, image_column, label_column)
        return _standardise_columns(load_image_folder(path), where, image_column, label_column)
    if source.startswith((".", "/", "~")):
        raise DataError(f"{where}: no such folder")
    from huggingface_hub import constants

    from nlp_ssl.hub import check_hub_repo

    check_hub_repo(source, "dataset", key)
    try:
        dataset = datasets.load_dataset(source, split=split, cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as err:  # the Hub raises many types; the user needs the key, the name and the reason
        if isinstance(err, ConnectionError) and constants.HF_HUB_OFFLINE:
            raise DataError(f"{where}: not a local folder, and HF_HUB_OFFLINE=1 is set with no copy of it in the "
                            "datasets cache") from None
        raise DataError(f"{where}: split {split!r} could not be loaded from the Hub: {err}") from err
    return _standardise_columns(dataset, where, image_column, label_column)
