"""English-Spanish verse pairs from Debian's SWORD Bibles, and the monolingual texts for XLM.

``sword-text-kjv`` (King James Version) and ``sword-text-sparv`` (Reina-Valera 1909) are public
domain and share the KJV versification, so verses align by reference. ``mod2imp`` (Debian
``libsword-utils``) exports a module as ``$$$Book C:V`` lines followed by the verse; the little
markup ``-s`` leaves (Strong's numbers ``<H1234>``, USFM ``\\nd`` name markers, pilcrows, the
brackets of supplied words, drop-capital first words) is removed here.

On a machine that reaches the Hub, ``load_dataset("Helsinki-NLP/opus-100", "en-es")`` gives the same
kind of data (a ``translation`` column of ``{"en", "es"}`` pairs), at one million pairs.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk

from nlp_ssl import atomic
from nlp_ssl.config import check_ranges
from nlp_ssl.data.cache import cache_root
from nlp_ssl.data.holdout import hold_out
from nlp_ssl.errors import ConfigError, DataError

PAIRS_VERSION = "v1"
MOD2IMP_PACKAGE = "libsword-utils"


@dataclass(frozen=True)
class SwordText:
    package: str
    abbreviation: str
    lang: str


#: The two Bibles, by language; the module name is looked up from the ``mods.d`` confs.
SWORD_TEXTS = {
    "en": SwordText("sword-text-kjv", "KJV", "en"),
    "es": SwordText("sword-text-sparv", "RV1909", "es"),
}

_REF = re.compile(r"^(?P<book>.+) (?P<chapter>\d+):(?P<verse>\d+)$")
_TAG = re.compile(r"<[^>]*>")
_USFM = re.compile(r"\\[a-z]+\d*\*?\s?")
_CAPS_WORD = re.compile(r"(^|[.:;!?]\s+)([¡¿]?)([A-ZÁÉÍÓÚÑÜ])([A-ZÁÉÍÓÚÑÜ]+)\b")


def _sword_dirs() -> list[Path]:
    dirs = [os.environ.get("SWORD_PATH"), str(Path.home() / ".sword"), "/usr/share/sword"]
    return [Path(d) for d in dirs if d]


def find_sword_module(text: SwordText) -> str:
    """The module name (e.g. ``engKJV2006eb``) whose conf has ``text``'s abbreviation and language."""
    for root in _sword_dirs():
        for conf in sorted((root / "mods.d").glob("*.conf")):
            parser = configparser.ConfigParser(strict=False, interpolation=None)
            try:
                parser.read_string(conf.read_text(encoding="utf-8", errors="replace"))
            except configparser.Error:
                continue
            for name in parser.sections():
                fields = parser[name]
                if fields.get("Abbreviation") == text.abbreviation and fields.get("Lang", "").split("-")[0] == text.lang:
                    return name
    raise DataError(
        f"SWORD module {text.abbreviation} ({text.lang}) not found under "
        f"{', '.join(str(d / 'mods.d') for d in _sword_dirs())}; install the Debian package "
        f"{text.package} (apt-get install {text.package})"
    )


def export_sword_module(module: str) -> str:
    """The plain-text export of ``module`` by ``mod2imp -s``."""
    if shutil.which("mod2imp") is None:
        raise DataError(f"mod2imp not found; install the Debian package {MOD2IMP_PACKAGE} (apt-get install {MOD2IMP_PACKAGE})")
    result = subprocess.run(["mod2imp", module, "-s"], capture_output=True, text=True, encoding="utf-8", errors="replace")
    if result.returncode != 0 or "$$$" not in result.stdout:
        raise DataError(f"mod2imp could not export SWORD module {module!r}: {result.stderr.strip()[-300:]}")
    return result.stdout


def clean_verse(text: str, first_of_chapter: bool = False) -> str:
    """Verse text without SWORD's leftover markup; a chapter's drop-capital first word is de-capitalised."""
    text = _TAG.sub("", text)
    text = _USFM.sub("", text)
    text = text.replace("¶", "").replace("[", "").replace("]", "")
    text = " ".join(text.split())
    if first_of_chapter:
        text = _CAPS_WORD.sub(lambda m: m[1] + m[2] + m[3] + m[4].lower(), text, count=1)
    return text


def parse_verses(export: str) -> list[tuple[str, int, int, str]]:
    """``(book, chapter, verse, text)`` in canonical order; headings and empty verses are dropped."""
    parts = re.split(r"^\$\$\$(.*)$", export, flags=re.M)
    verses = []
    for key, body in zip(parts[1::2], parts[2::2]):
        ref = _REF.match(key.strip())
        if ref is None or ref["verse"] == "0":
            continue
        verse = int(ref["verse"])
        text = clean_verse(body, first_of_chapter=verse == 1)
        if text:
            verses.append((ref["book"], int(ref["chapter"]), verse, text))
    return verses


def read_bible(lang: str) -> list[tuple[str, int, int, str]]:
    """The verses of the SWORD Bible for ``lang`` (``en`` = KJV, ``es`` = Reina-Valera 1909)."""
    if lang not in SWORD_TEXTS:
        raise DataError(f"no SWORD Bible for language {lang!r}; known: {sorted(SWORD_TEXTS)}")
    return parse_verses(export_sword_module(find_sword_module(SWORD_TEXTS[lang])))


def build_sword_pairs(cache_dir: str | Path | None = None) -> Path:
    """Build (once) the en-es verse pairs; return the ``save_to_disk`` folder."""
    final = cache_root(cache_dir) / "datasets" / f"sword-en-es-{PAIRS_VERSION}"
    if (final / "dataset_info.json").is_file():
        return final
    english = read_bible("en")
    spanish = {(book, chapter, verse): text for book, chapter, verse, text in read_bible("es")}
    rows = {"ref": [], "translation": []}
    for book, chapter, verse, text in english:
        other = spanish.get((book, chapter, verse))
        if other:
            rows["ref"].append(f"{book} {chapter}:{verse}")
            rows["translation"].append({"en": text, "es": other})
    if not rows["ref"]:
        raise DataError("the KJV and Reina-Valera SWORD modules share no verse reference; are the modules complete?")
    tmp = atomic.staging_dir(final)
    Dataset.from_dict(rows).save_to_disk(str(tmp))
    atomic.publish_cache_dir(tmp, final, "dataset_info.json")
    return final


def load_sword_pairs(cache_dir: str | Path | None = None) -> Dataset:
    """About 31k en-es verse pairs: columns ``ref`` (e.g. ``Genesis 1:1``) and ``translation`` ``{"en", "es"}``."""
    return load_from_disk(str(build_sword_pairs(cache_dir)))


MONOLINGUAL_SPLITS = {"en": "en_train", "fr": "fr", "es": "es"}


def load_monolingual_corpus(lang: str, cache_dir: str | Path | None = None) -> Dataset:
    """Wikipedia lead sections of the built-in corpus in ``lang`` (a ``text`` column), for XLM's MLM."""
    from nlp_ssl.data.wiki import load_wiki_corpus

    if lang not in MONOLINGUAL_SPLITS:
        raise DataError(f"no built-in monolingual corpus for language {lang!r}; known: {sorted(MONOLINGUAL_SPLITS)}")
    return load_wiki_corpus(cache_dir)[MONOLINGUAL_SPLITS[lang]]


# ---------------------------------------------------------------------------------------------
# XLM's data: monolingual streams and translation pairs, split for training and validation


@dataclass
class XLMDataConfig:
    """The monolingual streams and the parallel pairs, and the languages they are in."""

    #: Languages of the monolingual streams (built-in Wikipedia leads: en, fr, es).
    languages: list[str] = field(default_factory=lambda: ["en", "fr", "es"])
    #: Translation directions ``src-tgt`` for TLM (built-in pairs: en-es Bible verses).
    pairs: list[str] = field(default_factory=lambda: ["en-es", "es-en"])
    #: A local jsonl of ``{"translation": {lang: text, ...}}`` rows instead of the built-in pairs.
    pairs_file: str | None = None
    max_length: int = 128
    #: Held out for validation: this fraction of the documents of each language, and of the
    #: Bible's books (whole books) or of the rows of ``pairs_file``.
    validation_split: float = 0.05
    #: Cap on the training documents per language and on the training pairs (small runs).
    max_documents: int | None = None
    num_proc: int | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        check_ranges(self, max_length="(0, inf)", validation_split="(0, 1)", max_documents="(0, inf)", num_proc="(0, inf)")


def parse_direction(text: str) -> tuple[str, str]:
    """``"en-es"`` → ``("en", "es")``."""
    src, sep, tgt = text.partition("-")
    if not sep or not src or not tgt or src == tgt:
        raise ConfigError(f"data.pairs: {text!r} is not a translation direction like 'en-es'")
    return src, tgt


def load_monolingual_splits(cfg: XLMDataConfig, seed: int) -> dict[str, DatasetDict]:
    """Per language, its documents split for training (at most ``max_documents``) and validation."""
    splits = {}
    for lang in cfg.languages:
        corpus = load_monolingual_corpus(lang, cfg.cache_dir)
        splits[lang] = hold_out(corpus, cfg.validation_split, seed, f"{lang} documents", cfg.max_documents)
    return splits


def load_pair_splits(cfg: XLMDataConfig, seed: int) -> DatasetDict:
    """Translation pairs split for training and validation: whole books of the Bible (the ``ref``
    before ``chapter:verse``), so no verse of a validation book, nor its translation, is trained on."""
    if cfg.pairs_file:
        from datasets import load_dataset

        from nlp_ssl.data.text import check_text_file

        path = check_text_file(cfg.pairs_file, "data.pairs_file")
        check_pairs_file(path)
        pairs = load_dataset("json", data_files=str(path), split="train", cache_dir=cfg.cache_dir)
    else:
        pairs = load_sword_pairs(cfg.cache_dir)
    books = [ref.rsplit(" ", 1)[0] for ref in pairs["ref"]] if "ref" in pairs.column_names else None
    where = f"data.pairs_file {cfg.pairs_file}" if cfg.pairs_file else "verse pairs"
    return hold_out(pairs, cfg.validation_split, seed, where, cfg.max_documents, groups=books)


def check_pairs_file(path: Path) -> None:
    """Every line a JSON object whose ``translation`` maps languages to texts, or one line naming the
    first that is not (``datasets`` would fail on it with a generic error, or read it as no pair)."""
    import json

    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"data.pairs_file {path} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: a JSON {type(row).__name__}, not an object like "
                                f'{{"translation": {{"en": "...", "es": "..."}}}}')
            translation = row.get("translation")
            if not isinstance(translation, dict) or not all(isinstance(t, str) for t in translation.values()):
                raise DataError(f'{where}: field "translation" must map languages to texts, like '
                                f'{{"en": "...", "es": "..."}}; got {json.dumps(translation)[:60]}')


def _pair_text(row: dict) -> dict:
    return {"text": "\n".join(t for t in row["translation"].values() if isinstance(t, str))}


def pair_texts(pairs: Dataset) -> Dataset:
    """Both sides of each pair as one ``text``, to train a tokenizer on."""
    return pairs.map(_pair_text, remove_columns=pairs.column_names)
