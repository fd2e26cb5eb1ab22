"""Build Fashion-MNIST (train 60,000 + test 10,000, 28x28 grayscale) and cache it with save_to_disk.

Reads the gzip IDX files of the Debian package (``apt-get install dataset-fashion-mnist``, files in
/usr/share/datasets/fashion-mnist/), so it works offline. Recipes then load the cache in seconds via
``nlp_ssl.data.images.load_fashion_mnist(split, cache_dir)`` or ``source: fashion_mnist``.

On a machine with Hub access the same data is ``datasets.load_dataset("zalando-datasets/fashion_mnist")``
(columns ``image`` and ``label``, identical class names); a ``save_to_disk`` copy of it also works
as a recipe's image source.

    python data_scripts/prepare_fashion_mnist.py --cache_dir data/cache
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nlp_ssl.data.images import FASHION_MNIST_DIR, load_fashion_mnist
from nlp_ssl.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache_dir", required=True, help="where fashion_mnist/<split> folders are written")
    parser.add_argument("--raw_dir", default=FASHION_MNIST_DIR, help="folder holding the gzip IDX files")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    args = parser.parse_args(argv)
    try:
        for split in args.splits:
            dataset = load_fashion_mnist(split, args.cache_dir, root=args.raw_dir)
            print(f"{split}: {dataset.num_rows} images -> {Path(args.cache_dir) / 'fashion_mnist' / split}")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
