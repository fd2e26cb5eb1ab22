"""Hold documents out for validation: one rule for every unlabelled text corpus (local files, the
built-in corpora, NSP documents, XLM's monolingual streams and verse pairs)."""

from __future__ import annotations

import math
from collections import Counter

from datasets import Dataset, DatasetDict

from nlp_ssl.errors import ConfigError, DataError


def first_rows(ds: Dataset, n: int | None) -> Dataset:
    """At most the first ``n`` rows (all of them when ``n`` is None): small runs train on a prefix."""
    return ds.select(range(min(n, len(ds)))) if n else ds


def hold_out(
    ds: Dataset, fraction: float, seed: int, where: str, max_train: int | None = None, groups: list[str] | None = None
) -> DatasetDict:
    """``{"train", "validation"}``: a seeded ``fraction`` of the rows held out, then at most ``max_train``
    training rows. With ``groups`` (a name per row, e.g. a verse's book) whole groups are held out,
    so that nothing of a validation group is trained on. ``where`` names the data in errors."""
    if not 0 < fraction < 1:
        raise ConfigError(f"data.validation_split must be in (0, 1), got {fraction}")
    if groups is None:
        if len(ds) - math.ceil(fraction * len(ds)) < 1:  # as train_test_split rounds
            raise DataError(
                f"{where}: {len(ds)} document(s) are too few to hold out data.validation_split={fraction} "
                "for validation and train on the rest; add documents or pass data.validation_file"
            )
        parts = ds.train_test_split(test_size=fraction, seed=seed, shuffle=True)
        return DatasetDict(train=first_rows(parts["train"], max_train), validation=parts["test"])
    held = _held_groups(groups, fraction, seed)
    if len(held) == len(set(groups)):
        raise DataError(f"{where}: {len(set(groups))} group(s) are too few to hold out data.validation_split={fraction}")
    train = [i for i, g in enumerate(groups) if g not in held]
    validation = [i for i, g in enumerate(groups) if g in held]
    return DatasetDict(train=first_rows(ds.select(train), max_train), validation=ds.select(validation))


def _held_groups(groups: list[str], fraction: float, seed: int) -> set[str]:
    """Groups in a seeded order until they hold ``fraction`` of the rows."""
    sizes = Counter(groups)
    order = Dataset.from_dict({"name": sorted(sizes)}).shuffle(seed=seed)["name"]
    held, total = set(), 0
    for name in order:
        if total >= fraction * len(groups):
            break
        held.add(name)
        total += sizes[name]
    return held
