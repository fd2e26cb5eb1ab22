"""The run's DataLoaders, and the training micro-batches epoch after epoch from where the state says.

A streamed training set gets torchdata's stateful loader: each checkpoint saves the stream's
position (:class:`StreamPosition`), so a resume continues the stream instead of re-reading it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from accelerate.utils import is_torchdata_stateful_dataloader_available
from torch.utils.data import DataLoader, IterableDataset

from nlp_ssl.errors import ConfigError

logger = logging.getLogger("nlp_ssl.trainer")

#: In a checkpoint: where a streamed training set stopped (the stateful loader's ``state_dict``).
STREAM_STATE_FILE = "train_stream_state.pt"


def is_iterable(dataset) -> bool:
    return isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__")


def train_loader(dataset, collator, config, accelerator, batch_sampler=None) -> DataLoader:
    """Shuffled (unless streamed), ``micro_batch_size`` examples a batch (or the ``batch_sampler``'s), last short one dropped."""
    return make_loader(dataset, collator, config.impl.micro_batch_size, True, config, accelerator, batch_sampler)


def eval_loader(dataset, collator, config, accelerator) -> DataLoader:
    """In order, ``eval_batch_size`` (else ``micro_batch_size``) examples a batch, every example."""
    return make_loader(dataset, collator, config.eval.batch_size or config.impl.micro_batch_size, False, config, accelerator)


def make_loader(dataset, collator, batch_size: int, train: bool, config, accelerator, batch_sampler=None) -> DataLoader:
    """A DataLoader with a generator of its own: starting an iterator (which a resume does at
    another moment than an uninterrupted run) must not draw from the global RNG that dropout uses.

    Workers hold copies of the collator, made when an iterator starts. A collator whose
    randomness follows the epoch (``set_epoch``) therefore gets fresh workers each epoch (and
    each evaluation); others keep theirs (``persistent_workers``). Pinned memory on CUDA. A streamed
    training set gets the stateful loader of :func:`stream_loader`, prepared already.
    """
    iterable = is_iterable(dataset)
    generator = torch.Generator().manual_seed(config.seed)
    workers = config.impl.num_workers
    options = dict(collate_fn=collator, num_workers=workers, generator=generator,
                   pin_memory=accelerator.device.type == "cuda")
    if workers:
        options["persistent_workers"] = not hasattr(collator, "set_epoch")
        if config.impl.prefetch_factor:
            options["prefetch_factor"] = config.impl.prefetch_factor
    if train and batch_sampler is not None:
        if getattr(batch_sampler, "batch_size", None) != batch_size:
            raise ConfigError(f"batch_sampler gives batches of {getattr(batch_sampler, 'batch_size', None)}, "
                              f"not micro_batch_size {batch_size}")
        return DataLoader(dataset, batch_sampler=batch_sampler, **options)
    if train and streams_statefully(dataset, batch_sampler):
        return stream_loader(dataset, batch_size, options, accelerator)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and not iterable, drop_last=train, **options)


def streams_statefully(dataset, batch_sampler) -> bool:
    """Whether the training loader is a stateful stream whose position checkpoints save."""
    return batch_sampler is None and is_iterable(dataset) and is_torchdata_stateful_dataloader_available()


def stream_loader(dataset, batch_size: int, options: dict, accelerator) -> DataLoader:
    """Streamed training data, prepared here: process 0 reads each global batch and hands every
    process its slice (accelerate's dispatching, as for any stream), through torchdata's
    StatefulDataLoader, whose ``state_dict`` holds the stream's own (``datasets``' position). One
    read per global batch keeps that state exact at every step; checkpoints save it, so a resume
    continues the stream instead of re-reading it (O(1) in the step, see :func:`micro_batches`)."""
    acc = accelerator
    loader = DataLoader(dataset, batch_size=batch_size * acc.num_processes, drop_last=True, **options)
    settings = acc.dataloader_config
    kept = settings.dispatch_batches, settings.split_batches, settings.use_stateful_dataloader
    settings.dispatch_batches = settings.split_batches = settings.use_stateful_dataloader = True
    warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)  # torchdata 0.11
    try:
        loader = acc.prepare(loader)  # marked prepared: the later prepare() returns it as it is
    finally:
        settings.dispatch_batches, settings.split_batches, settings.use_stateful_dataloader = kept
    # Every process would write accelerate's dl_state_dict.bin to one path; process 0's is the state.
    loader.use_stateful_dataloader = False
    loader.base_dataloader.generator = options["generator"]  # dispatching drops it: iterators would seed
    # from the global RNG that dropout uses
    return loader


class StreamPosition:
    """Where a streamed training set stands: saved with each checkpoint, restored by a resume."""

    def __init__(self, stateful: bool):
        #: The training loader is a stateful stream (else there is nothing to save).
        self.stateful = stateful
        #: Set by a restore: ``continue`` (the loader is where the stream stopped) or ``epoch_done``.
        self.restored: str | None = None
        #: Batches were read through a skipping copy this epoch, so the loader's own state is behind.
        self.stale = False

    def save(self, loader, folder: Path) -> None:
        """Into a checkpoint folder (main process), unless there is no fresh state to save."""
        if self.stateful and not self.stale:
            torch.save({"global_batch": loader.batch_size, "loader": loader.state_dict()}, folder / STREAM_STATE_FILE)

    def restore(self, loader, folder: Path) -> None:
        """Put a streamed loader back where the checkpoint's stream stopped; without that state (an
        older checkpoint, another global batch) :func:`micro_batches` re-reads up to the step instead."""
        if not self.stateful:
            return
        file = folder / STREAM_STATE_FILE
        saved = torch.load(file, weights_only=False) if file.is_file() else None
        if saved is None or saved["global_batch"] != loader.batch_size:
            why = "has no stream state" if saved is None else f"was saved with global batches of {saved['global_batch']}"
            logger.warning("checkpoint %s %s: re-reading the stream up to the resume point", folder, why)
            return
        if saved["loader"].get("_iterator_finished"):  # saved right after the last batch of an epoch
            self.restored = "epoch_done"
        else:
            loader.load_state_dict(saved["loader"])
            self.restored = "continue"


def micro_batches(accelerator, loader, state, collator, batch_sampler, stream: StreamPosition):
    """Endless micro-batches, epoch after epoch, starting where the state says."""
    while True:
        loader.set_epoch(state.epoch)
        if hasattr(collator, "set_epoch"):
            collator.set_epoch(state.epoch)
        if hasattr(batch_sampler, "set_epoch"):  # accelerate's shard wrapper does not pass it on
            batch_sampler.set_epoch(state.epoch)
        skip = state.batches_in_epoch
        # After a resume that restored the stream's state, the loader continues from there.
        restored, stream.restored = stream.restored, None
        if restored == "epoch_done":
            state.epoch += 1
            state.batches_in_epoch = 0
            continue
        skipping = bool(skip) and not restored
        batches = accelerator.skip_first_batches(loader, skip) if skipping else loader
        # Batches read through a skipping copy leave the loader's state behind: none is saved this epoch.
        stream.stale = skipping
        produced = False
        for batch in batches:
            produced = True
            state.batches_in_epoch += 1
            yield batch
        if not produced and skip == 0:
            raise ConfigError("the training data gave no batch: it has fewer examples than micro_batch_size")
        state.epoch += 1
        state.batches_in_epoch = 0
