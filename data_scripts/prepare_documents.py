"""Build the document corpora for NSP/SOP (documents of consecutive sentences) and cache them.

- ``python-docs``: the Python 3.11 documentation (Debian ``python3.11-doc``), one document per
  page, its prose paragraphs split into sentences.
- ``kjv-chapters``: the King James Bible (Debian ``sword-text-kjv`` + ``libsword-utils``), one
  document per chapter, one sentence per verse.

``apt-get install python3.11-doc libsword-utils sword-text-kjv``. Recipes read them with
``nlp_ssl.data.documents.load_python_docs(cache_dir)`` / ``load_kjv_chapters(cache_dir)`` (columns
``title`` and ``sentences``) and turn them into pairs with
``nlp_ssl.data.nsp_pairs.build_nsp_dataset(docs, tokenizer, column="sentences")``.

On a machine with Hub access, ``datasets.load_dataset("wikimedia/wikipedia", "20231101.en")`` gives
the documents BERT was trained on; pass it with ``column="text"`` and ``build_nsp_dataset`` splits
each article into sentences the same way.

    python data_scripts/prepare_documents.py [--cache_dir DIR] [--corpora python-docs kjv-chapters]
"""

from __future__ import annotations

import argparse
import sys

from nlp_ssl.data.documents import build_kjv_chapters, build_python_docs
from nlp_ssl.errors import DataError

BUILDERS = {"python-docs": build_python_docs, "kjv-chapters": build_kjv_chapters}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache_dir", default=None, help="cache root (default: $NLP_SSL_CACHE or ~/.cache/nlp_ssl)")
    parser.add_argument("--corpora", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    args = parser.parse_args(argv)
    from datasets import load_from_disk

    for name in args.corpora:
        try:
            folder = BUILDERS[name](args.cache_dir)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        docs = load_from_disk(str(folder))
        sentences = sum(len(s) for s in docs["sentences"])
        print(f"{name}: {docs.num_rows} documents, {sentences} sentences -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
