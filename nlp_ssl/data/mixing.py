"""Alternate optimizer steps between several datasets at a fixed ratio, as XLM alternates MLM and TLM.

XLM trains each objective and language as its own stream: every update comes from one stream
(one language for MLM, one language pair for TLM), and the streams take turns. Here the streams are
concatenated into one map-style dataset (``torch.utils.data.ConcatDataset`` or
``datasets.concatenate_datasets``), and :class:`AlternatingBatchSampler` yields the micro-batches of
indices: all ``batches_per_step`` micro-batches of one optimizer step (every accumulation step on
every process) come from the same source, and the sources take turns following ``schedule``.

The order is a pure function of ``seed`` and the epoch (:meth:`AlternatingBatchSampler.set_epoch`),
so skipping the first ``n`` batches of an epoch (accelerate's ``skip_first_batches``) resumes a run
exactly where it stopped, and accelerate's ``BatchSamplerShard`` gives each process its share of
each step. A source that runs out before the epoch ends is reshuffled and read again, as XLM's
iterators restart; an epoch lasts until every scheduled source has been read at least once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from nlp_ssl.errors import ConfigError, DataError


def parse_ratio(text: str, where: str = "schedule") -> dict[str, int]:
    """``"mlm:1,tlm:2"`` -> ``{"mlm": 1, "tlm": 2}``: how many optimizer steps each group gets per round."""
    ratio: dict[str, int] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        name, sep, count = part.partition(":")
        name = name.strip()
        try:
            steps = int(count) if sep else 1
        except ValueError:
            raise ConfigError(f"{where} {text!r}: {part!r} is not name:steps with an integer number of steps") from None
        if not name or steps < 0:
            raise ConfigError(f"{where} {text!r}: {part!r} is not name:steps with a non-negative number of steps")
        if name in ratio:
            raise ConfigError(f"{where} {text!r}: {name!r} appears twice")
        ratio[name] = steps
    if not any(ratio.values()):
        raise ConfigError(f"{where} {text!r}: no group gets a step")
    return ratio


def round_robin_schedule(ratio: Mapping[str, int], members: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle of step sources: each group gets ``ratio[group]`` steps per round, spread evenly, and
    its steps rotate over ``members[group]`` (e.g. the MLM steps over en, fr, es).

    ``{"mlm": 1, "tlm": 1}`` with mlm members en, fr, es gives ``en tlm fr tlm es tlm``.
    """
    active = {g: n for g, n in ratio.items() if n > 0}
    for group in active:
        if not members.get(group):
            with_data = sorted(g for g in members if members[g])
            raise ConfigError(f"schedule group {group!r} has no data source; groups with data: {with_data}")
    rounds = math.lcm(*(len(members[g]) // math.gcd(len(members[g]), n) for g, n in active.items()))
    total = sum(active.values())
    # Spread each group's steps evenly over a round: step k of group g sits at (k + 0.5) / n.
    slots = sorted((((k + 0.5) / n), order, g) for order, (g, n) in enumerate(active.items()) for k in range(n))
    used = {g: 0 for g in active}
    schedule = []
    for _ in range(rounds):
        for _, _, group in slots:
            schedule.append(members[group][used[group] % len(members[group])])
            used[group] += 1
    assert len(schedule) == rounds * total
    return schedule


class AlternatingBatchSampler:
    """Batches of indices into the concatenation of sources of ``sizes``; optimizer step ``s`` uses
    source ``schedule[s % len(schedule)]`` for all its ``batches_per_step`` micro-batches.

    ``batches_per_step`` is the number of micro-batches in one optimizer step over all processes:
    ``global_batch_size // micro_batch_size``. ``names`` label the sources in error messages.
    """

    drop_last = True  # every batch is full (accelerate reads this when it shards the sampler)

    def __init__(
        self,
        sizes: Sequence[int],
        schedule: Sequence[int],
        batch_size: int,
        batches_per_step: int = 1,
        seed: int = 0,
        names: Sequence[str] | None = None,
        steps_per_epoch: int | None = None,
    ):
        names = list(names) if names is not None else [f"source {i}" for i in range(len(sizes))]
        if len(names) != len(sizes):
            raise ConfigError(f"{len(names)} names for {len(sizes)} sources")
        if batch_size < 1 or batches_per_step < 1:
            raise ConfigError(f"batch_size {batch_size} and batches_per_step {batches_per_step} must be at least 1")
        if not schedule:
            raise ConfigError("the schedule is empty: no source gets a step")
        for source in schedule:
            if not 0 <= source < len(sizes):
                raise ConfigError(f"schedule names source {source}; there are {len(sizes)} sources")
            if sizes[source] < batch_size:
                raise DataError(f"{names[source]}: {sizes[source]} examples, fewer than one batch of {batch_size}")
        self.sizes = [int(s) for s in sizes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.schedule = list(schedule)
        self.batch_size = batch_size
        self.batches_per_step = batches_per_step
        self.seed = seed
        self.names = names
        self.epoch = 0
        self.steps_per_epoch = steps_per_epoch or self._default_steps_per_epoch()

    def _default_steps_per_epoch(self) -> int:
        """Enough whole cycles of the schedule for every scheduled source to be read once."""
        cycles = 1
        for source in set(self.schedule):
            visits = self.schedule.count(source) * self.batches_per_step
            cycles = max(cycles, math.ceil(self.sizes[source] // self.batch_size / visits))
        return cycles * len(self.schedule)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batches_per_step

    def _permutation(self, source: int, read: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, source, read])
        return rng.permutation(self.sizes[source]) + self.offsets[source]

    def source_of_step(self, step: int) -> int:
        return self.schedule[step % len(self.schedule)]

    def __iter__(self):
        reads = [0] * len(self.sizes)
        position = [0] * len(self.sizes)
        order: dict[int, np.ndarray] = {}
        for step in range(self.steps_per_epoch):
            source = self.source_of_step(step)
            for _ in range(self.batches_per_step):
                if source not in order or position[source] + self.batch_size > self.sizes[source]:
                    order[source] = self._permutation(source, reads[source])
                    reads[source] += 1
                    position[source] = 0
                start = position[source]
                position[source] += self.batch_size
                yield order[source][start : start + self.batch_size].tolist()


def interleaved_indices(sizes: Sequence[int]) -> list[int]:
    """Indices into the concatenation of sources of ``sizes``, one from each source in turn, so that
    any prefix (an evaluation capped at a few batches) covers every source alike."""
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    return [int(offsets[s]) + i for i in range(max(sizes, default=0)) for s in range(len(sizes)) if i < sizes[s]]
