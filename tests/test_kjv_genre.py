"""The KJV genre task (data_scripts/prepare_kjv_genre.py): labels from the book, test verses from held-out chapters."""

import json

import pytest

import data_scripts.prepare_kjv_genre as script
from nlp_ssl import cli

FIRSTS = [first for _, first in script.GENRES]


def _fake_bible(books=FIRSTS, chapters=10, verses=5):
    """Each genre's first book only, with ``chapters`` x ``verses`` verses naming their reference."""
    return [(book, c, v, f"{book} {c}:{v} text") for book in books for c in range(1, chapters + 1) for v in range(1, verses + 1)]


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_verse_gets_its_books_genre_and_test_chapters_never_reach_the_pool(tmp_path, monkeypatch):
    bible = _fake_bible()
    bible.insert(5, ("Exodus", 1, 1, "Exodus 1:1 text"))  # a later book of the law, between Genesis's verses
    monkeypatch.setattr(script, "read_bible", lambda lang: bible)
    script.main(["--out", str(tmp_path), "--test_chapters", "0.2", "--test_per_class", "6", "--seed", "3"])
    pool, test = _read(tmp_path / "pool.jsonl"), _read(tmp_path / "test.jsonl")
    genre = {first: name for name, first in script.GENRES} | {"Exodus": "law"}
    for row in pool + test:
        assert row["label"] == genre[row["ref"].rsplit(" ", 1)[0]] and row["text"].startswith(row["ref"])
    chapter = lambda row: row["ref"].split(":")[0]  # noqa: E731
    assert not {chapter(r) for r in pool} & {chapter(r) for r in test}
    # Of each genre's held-out verses (10 or more), 6 are drawn.
    assert sorted({r["label"] for r in test}) == sorted(name for name, _ in script.GENRES)
    assert all(sum(r["label"] == name for r in test) == 6 for name, _ in script.GENRES)
    # The pool is every verse of the chapters not held out; each genre holds out round(20%) of its chapters.
    pool_chapters = {chapter(r) for r in pool}
    assert len(pool) == sum(f"{book} {c}" in pool_chapters for book, c, _, _ in bible)
    all_chapters = {(genre[book], f"{book} {c}") for book, c, _, _ in bible}
    held = [name for name, ch in all_chapters if ch not in pool_chapters]
    assert {name: held.count(name) for name in held} == {name: 2 for name, _ in script.GENRES}
    # The same seed gives the same files; another seed other test chapters.
    again = tmp_path / "again"
    script.main(["--out", str(again), "--test_chapters", "0.2", "--test_per_class", "6", "--seed", "3"])
    assert (again / "test.jsonl").read_text() == (tmp_path / "test.jsonl").read_text()
    other = tmp_path / "other"
    script.main(["--out", str(other), "--test_chapters", "0.2", "--test_per_class", "6", "--seed", "4"])
    assert {chapter(r) for r in _read(other / "test.jsonl")} != {chapter(r) for r in test}


def test_a_module_without_a_genres_first_book_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(script, "read_bible", lambda lang: _fake_bible(books=[b for b in FIRSTS if b != "Hosea"]))
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: script.main(["--out", str(tmp_path)]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "'Hosea'" in err[0] and not (tmp_path / "pool.jsonl").exists()
