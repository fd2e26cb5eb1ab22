"""Build the en-es verse pairs (KJV against Reina-Valera 1909) for TLM and cache them with save_to_disk.

Needs the Debian packages ``libsword-utils`` (for ``mod2imp``), ``sword-text-kjv`` and
``sword-text-sparv``: ``apt-get install libsword-utils sword-text-kjv sword-text-sparv``. About
31k pairs; a second run loads the cache in a second. Recipes read it with
``nlp_ssl.data.parallel.load_sword_pairs(cache_dir)`` (a ``translation`` column of ``{"en", "es"}``).
The French and Spanish monolingual texts for XLM's MLM need no script: they are the built-in
corpus, ``nlp_ssl.data.parallel.load_monolingual_corpus("fr" | "es")``.

On a machine with Hub access, ``datasets.load_dataset("Helsinki-NLP/opus-100", "en-es")`` has the
same ``translation`` column (one million pairs of subtitles and other text); a ``save_to_disk``
copy of it works wherever the SWORD pairs do.

    python data_scripts/prepare_parallel.py [--cache_dir DIR]
"""

from __future__ import annotations

import argparse
import sys

from nlp_ssl.data.parallel import build_sword_pairs, load_sword_pairs
from nlp_ssl.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache_dir", default=None, help="cache root (default: $NLP_SSL_CACHE or ~/.cache/nlp_ssl)")
    args = parser.parse_args(argv)
    try:
        folder = build_sword_pairs(args.cache_dir)
        pairs = load_sword_pairs(args.cache_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    first = pairs[0]
    print(f"{pairs.num_rows} en-es pairs -> {folder}")
    print(f"{first['ref']}: {first['translation']['en']} | {first['translation']['es']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
