"""Resumable shuffling: a training order that depends on (seed, epoch) alone and can restart mid-epoch.

A plain ``DataLoader(shuffle=True, generator=g)`` draws each epoch's permutation from the running state of
``g`` and has no notion of "position within the epoch", so a run resumed from a mid-epoch checkpoint sees
other batches than an uninterrupted run. Here

* :class:`ResumableRandomSampler` yields ``permutation(seed, epoch)`` (a fresh generator per epoch, so
  nothing depends on how many epochs ran in this process), optionally starting at an offset;
* :class:`ResumableDataLoader` counts the batches it has handed out in the current epoch and implements
  ``state_dict`` / ``load_state_dict``, which Lightning (2.x) stores in the checkpoint
  (``loops.fit_loop.state_dict.combined_loader``) and restores before the first batch of a resumed run.

The loader, not Lightning, counts epochs (Lightning's ``set_epoch`` does not reach a sampler wrapped in a
``BatchSampler`` that is itself the ``sampler``, and its epoch count is off by one after a restore at an
epoch boundary). The count is taken where batches leave the loader, so it is exact with worker processes
too (their read-ahead is not counted) and with Lightning's fetcher (which does not pre-fetch from loaders
with a length).

Under DDP (``torch.distributed`` initialised) the sampler shards the epoch itself: rank r of W takes
positions ``start + r, start + r + W, …`` of the one (seed, epoch) permutation, each rank ``n // W`` of them,
so global batch b is positions ``[b·B·W, (b+1)·B·W)`` of the permutation whatever W is. The trainer configs
set ``use_distributed_sampler: false`` so Lightning keeps this sampler; the checkpointed position
(epoch, batches, world_size) then restores exactly on the same W, and on another W continues from the same
number of samples seen (rounded down to a whole batch per rank). With one process nothing changes.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler


class TensorRows(Dataset):
    """A dataset over a tensor (N, …) whose items are its rows, with no labels; a list of indices (a
    BatchSampler's) gives the whole batch in one indexing."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        return self.rows[index]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed mixing (seed, epoch) (SeedSequence: nearby pairs give unrelated streams)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(2, np.uint64)[0] >> 1)


class ResumableRandomSampler(Sampler[int]):
    """Indices ``0..n-1`` in the order ``randperm(n)`` under a generator seeded by (seed, epoch),
    starting at ``start``. The owning :class:`ResumableDataLoader` sets ``epoch`` and ``start``; there is
    deliberately no ``set_epoch`` (Lightning's epoch count is off by one after some restores)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = int(n), int(seed)
        self.epoch, self.start = 0, 0  # start: position in the (global) permutation

    def permutation(self, epoch: int | None = None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch if epoch is None else epoch))
        return torch.randperm(self.n, generator=gen)

    def __iter__(self):
        rank, world = distributed_rank()
        if world == 1:
            yield from self.permutation()[self.start :].tolist()
            return
        rest = self.permutation()[self.start :]
        yield from rest[rank : (len(rest) // world) * world : world].tolist()

    def __len__(self) -> int:
        return self.n // distributed_rank()[1]


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _resumable_parts(loader: DataLoader) -> tuple[ResumableRandomSampler | None, int]:
    """The loader's ResumableRandomSampler and how many of its indices make one batch."""
    if loader.batch_size is not None:  # DataLoader(sampler=..., batch_size=B)
        base, size = loader.sampler, loader.batch_size
    elif isinstance(loader.sampler, BatchSampler):  # DataLoader(sampler=BatchSampler(...), batch_size=None)
        base, size = loader.sampler.sampler, loader.sampler.batch_size
    else:
        base, size = loader.sampler, 1
    return (base if isinstance(base, ResumableRandomSampler) else None), size


class ResumableDataLoader(DataLoader):
    """A DataLoader that knows its position (epoch, batches handed out in the epoch), saves and restores it.

    Each ``iter()`` continues the current epoch from that position; once all ``len(self)`` batches of an
    epoch were handed out, the next ``iter()`` starts the next epoch (its own permutation).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch, self._batches = 0, 0

    def _position(self) -> tuple[int, int]:
        if self._batches >= len(self):  # the epoch was used up: the next iteration starts a new one
            return self._epoch + 1, 0
        return self._epoch, self._batches

    def __iter__(self):
        self._epoch, self._batches = self._position()
        sampler, size = _resumable_parts(self)
        if sampler is not None:
            sampler.epoch, sampler.start = self._epoch, self._batches * size * distributed_rank()[1]
            if self.generator is not None:  # worker seeds depend on (seed, epoch) only
                self.generator.manual_seed(epoch_seed(sampler.seed + 1, self._epoch))
        elif self._batches:
            warnings.warn(
                "the train sampler was replaced (e.g. by DDP): the epoch restarts from its beginning", stacklevel=2
            )
            self._batches = 0
        return self._counting(super().__iter__())

    def _counting(self, iterator):
        for batch in iterator:
            self._batches += 1
            yield batch

    def state_dict(self) -> dict:
        epoch, batches = self._position()
        return {"epoch": epoch, "batches": batches, "world_size": distributed_rank()[1]}

    def load_state_dict(self, state: dict) -> None:
        self._epoch, self._batches = int(state["epoch"]), int(state["batches"])
        saved, world = int(state.get("world_size", 1)), distributed_rank()[1]
        if saved != world:  # same number of samples seen, rounded down to whole batches per rank
            self._batches = self._batches * saved // world
            warnings.warn(
                f"resuming a {saved}-process data position on {world} processes: the data order continues from "
                "the same sample count; the noise streams are per rank and not those of an uninterrupted run",
                stacklevel=2,
            )


def resumable_loader(dataset, batch_size: int, seed: int, drop_last: bool, **kwargs) -> ResumableDataLoader:
    """Shuffled training batches of ``dataset`` in a (seed, epoch)-determined order, resumable mid-epoch.

    A dedicated generator (not the global RNG) seeds worker processes, so creating the iterator on resume
    does not shift the global random stream that drives the objective.
    """
    return ResumableDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ResumableRandomSampler(len(dataset), seed),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(int(seed)),
        **kwargs,
    )


__all__ = ["ResumableDataLoader", "ResumableRandomSampler", "epoch_seed", "resumable_loader"]
