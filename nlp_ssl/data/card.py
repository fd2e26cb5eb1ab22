"""What a model card can say about a run's data: the licence it inherits and the Hub datasets it used.

Only what is known goes in: Wikipedia text is CC BY-SA 4.0 (share-alike, so the card says so); a
source that is a Hub dataset id is listed under ``datasets``; a local file says nothing.
"""

from __future__ import annotations

from pathlib import Path

#: Built-in sources whose terms a model trained on them should carry.
SHARE_ALIKE = {"builtin:wiki", "builtin:wiki_en", "builtin:wiki_fr", "builtin:wiki_es", "builtin:wiki_topic", "wiki"}
#: Built-in image sets and the Hub datasets they are copies of.
HUB_COPIES = {"fashion_mnist": "zalando-datasets/fashion_mnist"}


def data_card(source: str | None, train_file: str | None = None) -> dict:
    """``license`` and ``datasets`` for ``RunDescription(**data_card(...))``."""
    if train_file or not source:
        return {}
    fields: dict = {}
    if source in SHARE_ALIKE:
        fields["license"] = "cc-by-sa-4.0"
    if source in HUB_COPIES:
        fields["datasets"] = [HUB_COPIES[source]]
    elif source.count("/") == 1 and not source.startswith("builtin:") and not Path(source).exists():
        fields["datasets"] = [source]
    return fields
