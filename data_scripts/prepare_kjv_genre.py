"""Write the offline "which part of the Bible?" task: a King James verse labelled with its book's genre.

    python data_scripts/prepare_kjv_genre.py --out data/kjv_genre [--test_per_class 200 --seed 0]
    python recipes/study_text.py checkpoint=builtin:minilm "methods=[checkpoint,checkpoint_continued]" \\
        "finetune_args=[data.train_file=data/kjv_genre/pool.jsonl,data.test_file=data/kjv_genre/test.jsonl]"

It exists to test continued pretraining on text unlike a modern checkpoint's own data (Jacobean English,
Gururangan et al.'s "domain" case). Eight classes: law, history, wisdom, major and minor prophets,
gospels and Acts, Paul's letters, the other letters and Revelation. Test verses come from held-out
chapters, so no test verse has its neighbours in the pool (the pool's texts are also the continued-pretraining
corpus). Public domain (Debian ``sword-text-kjv``). With Hub access, any labelled dataset written as
jsonl with ``text`` and ``label`` columns (``load_dataset(...)[split].to_json(path)``) works the same way.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

from nlp_ssl import atomic, cli
from nlp_ssl.data.parallel import read_bible
from nlp_ssl.errors import DataError

#: Genre of each book, by the first book of each run in canonical order.
GENRES = (
    ("law", "Genesis"),
    ("history", "Joshua"),
    ("wisdom", "Job"),
    ("major_prophets", "Isaiah"),
    ("minor_prophets", "Hosea"),
    ("gospels_acts", "Matthew"),
    ("pauline_letters", "Romans"),
    ("other_letters_revelation", "Hebrews"),
)


def genre_of_books(books: list[str]) -> dict[str, str]:
    """Map each book (in canonical order) to its genre; fails loudly if the module names a first book differently."""
    firsts = {first: genre for genre, first in GENRES}
    missing = sorted(set(firsts) - set(books))
    if missing:
        raise DataError(f"the KJV module has no book named {missing[0]!r}; its first books are {books[:3]}")
    genre, mapping = None, {}
    for book in books:
        genre = firsts.get(book, genre)
        mapping[book] = genre
    return mapping


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for pool.jsonl and test.jsonl")
    parser.add_argument("--test_chapters", type=float, default=0.15, help="share of each genre's chapters held out")
    parser.add_argument("--test_per_class", type=int, default=200, help="test verses drawn per genre")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    verses = read_bible("en")
    books = list(dict.fromkeys(book for book, _, _, _ in verses))
    genre = genre_of_books(books)
    chapters: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for book, chapter, _, _ in verses:
        key = (book, chapter)
        if not chapters[genre[book]] or chapters[genre[book]][-1] != key:
            chapters[genre[book]].append(key)
    rng = random.Random(args.seed)
    held = set()
    for keys in chapters.values():
        held.update(rng.sample(keys, max(1, round(len(keys) * args.test_chapters))))
    pool, test = [], defaultdict(list)
    for book, chapter, verse, text in verses:
        row = {"text": text, "label": genre[book], "ref": f"{book} {chapter}:{verse}"}
        (test[row["label"]] if (book, chapter) in held else pool).append(row)
    test_rows = [row for rows in test.values() for row in rng.sample(rows, min(args.test_per_class, len(rows)))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("pool", pool), ("test", test_rows)):
        atomic.write_text(out / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        print(f"{len(rows)} {name} verses -> {out / f'{name}.jsonl'}")


if __name__ == "__main__":
    cli.run(main)
