"""Corpora of documents made of consecutive sentences, which NSP and SOP need.

- ``python3.11-doc`` (Debian, PSF licence): the reST sources of the Python documentation; a file is
  a document, and its prose paragraphs (code, tables, directives' arguments and headings dropped)
  give its sentences in order.
- KJV chapters (Debian ``sword-text-kjv``, public domain): a chapter is a document of verses.

Sentences come from :func:`split_sentences`, a regex splitter that needs no model download.
On a machine that reaches the Hub, ``load_dataset("wikimedia/wikipedia", "20231101.en")`` gives the
documents BERT itself used (pass its ``text`` column to ``nlp_ssl.data.nsp_pairs.build_nsp_dataset``,
which splits it into sentences the same way).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datasets import Dataset, DatasetDict, load_from_disk

from nlp_ssl import atomic
from nlp_ssl.config import check_ranges
from nlp_ssl.data.cache import cache_root
from nlp_ssl.data.holdout import hold_out
from nlp_ssl.data.text import check_one_corpus
from nlp_ssl.errors import ConfigError, DataError

DOCUMENTS_VERSION = "v1"
PYTHON_DOCS_PACKAGE = "python3.11-doc"
PYTHON_DOCS_DIR = Path("/usr/share/doc/python3.11/html/_sources")

# ---------------------------------------------------------------------------------------------
# Sentence splitting

#: Words that end in a full stop without ending a sentence (lower case, without the final dot).
ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf al approx ca no nos fig figs vol pp ed eds mr mrs ms dr prof st jr sr mt ft "
    "inc ltd co corp dept gen col lt sgt capt rev hon jan feb mar apr jun jul aug sep sept oct nov dec "
    "sra srta dña núm pág etc p.ej ee.uu mme mlle mm av u.s u.k a.m p.m".split()
)
_BOUNDARY = re.compile(r"([.!?…]+)([\"'”’»)\]]*)\s+")
_OPENERS = "\"'“‘«([¿¡"


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences at ``. ! ?`` followed by a capital or digit, and at blank lines.

    A full stop after a known abbreviation (``e.g.``, ``Dr.``) or a single letter (an initial) does
    not end a sentence.
    """
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        start = 0
        for match in _BOUNDARY.finditer(paragraph):
            nxt = paragraph[match.end() : match.end() + 3].lstrip(_OPENERS)
            if not nxt or not (nxt[0].isupper() or nxt[0].isdigit()):
                continue
            if match[1] == ".":
                word = paragraph[start : match.start()].rsplit(" ", 1)[-1].lstrip(_OPENERS).lower()
                if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                    continue
            sentences.append(paragraph[start : match.end()].strip())
            start = match.end()
        if paragraph[start:].strip():
            sentences.append(paragraph[start:].strip())
    return sentences


# ---------------------------------------------------------------------------------------------
# reST prose

#: Directives whose indented body is not prose (code, tables, indexes); other bodies are kept.
NON_PROSE_DIRECTIVES = frozenset(
    "code-block sourcecode code literalinclude productionlist highlight doctest testcode testoutput "
    "testsetup testcleanup index toctree raw image figure math csv-table list-table table include "
    "tabularcolumns program-output audit-event-table parsed-literal cssclass "
    "moduleauthor sectionauthor c:namespace opcodesummary".split()
)
_DIRECTIVE = re.compile(r"^\.\.\s+([\w:-]+)::")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_<>])\1{2,}\s*$")
_TABLE = re.compile(r"^(\+[-=+]+\+|=+( +=+)+)\s*$")
_FIELD = re.compile(r"^:[^`:]+:(\s|$)")
_BULLET = re.compile(r"^([*+\-•]|#\.|\d+[.)]|[a-z][.)])\s+")
_ROLE = re.compile(r":[\w:+-]+:`([^`]*)`")
_LINK = re.compile(r"`([^`<]*?)\s*(<[^>`]*>)?`__?")
_LITERAL = re.compile(r"``(.+?)``")
_EMPHASIS = re.compile(r"(\*\*?)(\S(?:.*?\S)?)\1(?!\w)")
_FOOTNOTE = re.compile(r"\s*\[(#\w*|\d+|\*)\]_")


def _role_text(match: re.Match) -> str:
    text = match[1]
    title = re.match(r"^(.*?)\s*<[^>]*>$", text)
    if title and title[1]:
        return title[1]
    text = text.lstrip("!")
    if text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    return text


def clean_inline(text: str) -> str:
    """reST inline markup to plain text: roles, links, literals, emphasis and footnote references."""
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = _FOOTNOTE.sub("", text)
    text = text.replace("\\ ", "").replace("\\", "")
    return " ".join(text.split())


def _blocks(lines: list[str]):
    """(indent, lines) of each run of non-blank lines."""
    block: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield len(block[0]) - len(block[0].lstrip()), block
            block = []


def rst_to_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a reST document, as plain text, in order.

    Literal blocks (after ``::``), code and table directives, comments, doctests, tables, headings
    and directive argument lines are dropped; bodies of prose directives (``.. function::``,
    ``.. note::``) are kept.
    """
    paragraphs: list[str] = []
    skip_deeper_than: int | None = None
    for indent, block in _blocks(text.expandtabs(8).splitlines()):
        if skip_deeper_than is not None:
            if indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        first = block[0].strip()
        if first.startswith(".."):
            directive = _DIRECTIVE.match(first)
            if directive is None or directive[1] in NON_PROSE_DIRECTIVES:
                skip_deeper_than = indent  # a comment, a target, or a non-prose directive
            continue  # the directive line and its option lines are not prose
        if first.startswith(">>>") or _TABLE.match(first) or _FIELD.match(first) or first.startswith("|"):
            continue
        if any(_UNDERLINE.match(line.strip()) for line in block):
            continue  # a heading (title plus under/overline)
        lines = [_BULLET.sub("", line.strip()) for line in block]
        joined = " ".join(lines)
        if joined.endswith("::"):
            skip_deeper_than = indent
            joined = joined[:-2].rstrip() + (":" if not joined.endswith(" ::") and len(joined) > 2 else "")
        plain = clean_inline(joined)
        if len(re.findall(r"[^\W\d_]{2,}", plain)) >= 3:
            paragraphs.append(plain)
    return paragraphs


# ---------------------------------------------------------------------------------------------
# Corpora


def _publish(rows: dict, name: str, cache_dir) -> Path:
    final = cache_root(cache_dir) / "datasets" / name
    tmp = atomic.staging_dir(final)
    Dataset.from_dict(rows).save_to_disk(str(tmp))
    atomic.publish_cache_dir(tmp, final, "dataset_info.json")
    return final


def build_python_docs(cache_dir: str | Path | None = None, source_dir: str | Path = PYTHON_DOCS_DIR) -> Path:
    """Build (once) the Python-docs documents; return the ``save_to_disk`` folder."""
    final = cache_root(cache_dir) / "datasets" / f"python-docs-{DOCUMENTS_VERSION}"
    if (final / "dataset_info.json").is_file():
        return final
    source_dir = Path(source_dir)
    files = sorted(source_dir.rglob("*.rst.txt")) if source_dir.is_dir() else []
    if not files:
        raise DataError(
            f"no reST sources under {source_dir}; install the Debian package {PYTHON_DOCS_PACKAGE} "
            f"(apt-get install {PYTHON_DOCS_PACKAGE})"
        )
    rows = {"title": [], "sentences": []}
    for path in files:
        paragraphs = rst_to_paragraphs(path.read_text(encoding="utf-8", errors="replace"))
        sentences = [s for p in paragraphs for s in split_sentences(p)]
        if sentences:
            rows["title"].append(str(path.relative_to(source_dir)).removesuffix(".rst.txt"))
            rows["sentences"].append(sentences)
    return _publish(rows, final.name, cache_dir)


def load_python_docs(cache_dir: str | Path | None = None) -> Dataset:
    """One row per documentation page: ``title`` (e.g. ``tutorial/controlflow``) and ``sentences``."""
    return load_from_disk(str(build_python_docs(cache_dir)))


def build_kjv_chapters(cache_dir: str | Path | None = None) -> Path:
    """Build (once) the KJV chapters; return the ``save_to_disk`` folder."""
    from nlp_ssl.data.parallel import read_bible

    final = cache_root(cache_dir) / "datasets" / f"kjv-chapters-{DOCUMENTS_VERSION}"
    if (final / "dataset_info.json").is_file():
        return final
    rows = {"title": [], "sentences": []}
    for book, chapter, _, text in read_bible("en"):
        title = f"{book} {chapter}"
        if not rows["title"] or rows["title"][-1] != title:
            rows["title"].append(title)
            rows["sentences"].append([])
        rows["sentences"][-1].append(text)
    return _publish(rows, final.name, cache_dir)


def load_kjv_chapters(cache_dir: str | Path | None = None) -> Dataset:
    """1,189 chapters of the King James Bible: ``title`` (e.g. ``Genesis 1``) and ``sentences`` (its verses)."""
    return load_from_disk(str(build_kjv_chapters(cache_dir)))


# ---------------------------------------------------------------------------------------------
# NSP/SOP documents, split for training and validation

SENTENCE_CORPORA = {"kjv": load_kjv_chapters, "python_docs": load_python_docs}


@dataclass
class DocumentDataConfig:
    """The documents that sentence pairs are drawn from, and how long a pair may be."""

    #: ``wiki`` (built-in Wikipedia leads, a text per document), ``kjv`` (Bible chapters of verses)
    #: or ``python_docs`` (pages of the Python documentation). Left at ``wiki`` when ``train_file`` is set.
    documents: Literal["wiki", "kjv", "python_docs"] = "wiki"
    #: A local file with one document per row (a text, or a list of sentences in jsonl).
    train_file: str | None = None
    #: Column of the documents (default: ``text`` for wiki and files, ``sentences`` for kjv and python_docs).
    column: str | None = None
    #: Fraction of the documents held out for validation.
    validation_split: float = 0.05
    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    #: Passes over the corpus, each with other A/B splits, random Bs and (in the collator) masks.
    dupe_factor: int = 5
    max_train_documents: int | None = None
    num_proc: int | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        check_ranges(self, validation_split="(0, 1)", max_seq_length="(0, inf)", short_seq_prob="[0, 1]",
                     dupe_factor="(0, inf)", max_train_documents="(0, inf)", num_proc="(0, inf)")
        check_one_corpus(self.train_file, "data.documents", self.documents, "wiki")


def load_document_splits(cfg: DocumentDataConfig, seed: int) -> tuple[DatasetDict, str]:
    """Train and validation documents (whole documents held out, so no validation sentence is ever
    a training A or B), and the column that holds them."""
    from nlp_ssl.data.text import TextDataConfig, load_text_splits

    if cfg.train_file or cfg.documents == "wiki":
        column = cfg.column or "text"
        text_cfg = TextDataConfig(
            train_file=cfg.train_file, text_column=column, validation_split=cfg.validation_split,
            max_train_documents=cfg.max_train_documents, cache_dir=cfg.cache_dir,
        )
        return load_text_splits(text_cfg, seed=seed), column
    column = cfg.column or "sentences"
    corpus = SENTENCE_CORPORA[cfg.documents](cfg.cache_dir)
    if column not in corpus.column_names:
        raise ConfigError(f"data.column {column!r}: data.documents={cfg.documents} has columns {corpus.column_names}")
    return hold_out(corpus, cfg.validation_split, seed, f"data.documents={cfg.documents}", cfg.max_train_documents), column


def _joined(row: dict, column: str) -> dict:
    value = row[column]
    if isinstance(value, list):
        value = " ".join(s for s in value if isinstance(s, str))
    return {"text": value if isinstance(value, str) else ""}  # bad rows are named by build_nsp_dataset


def document_texts(documents: Dataset, column: str) -> Dataset:
    """Each document as one ``text`` (sentences joined), to train a tokenizer on."""
    return documents.map(_joined, fn_kwargs={"column": column}, remove_columns=documents.column_names)
