"""What every batch order is (`BatchOrder`) and the scaffolding they share (`RankedOrder`).

The loop and the trainer read any order through `BatchOrder` alone: its sizes, its position and
its saved state, whatever the kind, so a new order cannot silently miss a piece of what a resume
needs. `RankedOrder` owns what each order used to set up on its own: the rank and world size,
the batch a (resumed) period starts at, the seed, the global batch and the rank's slice of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from drivelab.processor.facts import DatasetFacts


class BatchOrder(Protocol):
    """What the loop and the trainer read from any training batch order.

    A resume rebuilds the order from its trainer state (the batch count, ``epoch`` /
    ``batch_in_epoch`` and what `state` returned), so `state` must hold whatever the next batch
    depends on beyond the batch count.
    """

    batch_size: int  # samples (sequence rows) per step on this rank
    global_batch: int  # samples per step over all ranks (sequences: frames, nominal) for samples/s
    batches_per_epoch: int
    #: v2 balancing: each step is one batch per output, in this order (helper models); else None
    helper_outputs: list[str] | None

    def position(self, batches_done: int) -> tuple[int, int]:
        """(epoch, batch in epoch) after ``batches_done`` steps in total."""
        ...

    def state(self, batches_done: int) -> dict[str, Any] | None:
        """What the order needs beyond ``batches_done`` to continue after it (None: nothing)."""
        ...

    def __iter__(self) -> Iterator[Any]: ...


class RankedOrder:
    """One rank's view of a seeded global order: the part of `BatchOrder` every kind shares.

    A global batch holds ``rows = batch_size * world_size`` samples (or sequence rows); rank
    ``r`` reads the ``r``-th ``batch_size`` slice of it (`mine`), so every rank draws the same
    global order from ``seed`` and no two ranks read the same sample. ``start_batch`` is the batch
    the period starts at (a resumed run's batch count). The position after N batches is
    ``divmod(N, batches_per_epoch)`` and nothing beyond N is saved unless a kind says otherwise.
    """

    helper_outputs: list[str] | None = None
    batches_per_epoch: int

    def __init__(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start
        self.rows = batch_size * world_size
        self.global_batch = self.rows  # samples per step; sequence orders count frames instead

    def mine(self, rows: Any, size: int | None = None) -> Any:
        """This rank's slice of a global batch whose ranks read ``size`` rows each (``batch_size``)."""
        size = self.batch_size if size is None else size
        return rows[self.rank * size : (self.rank + 1) * size]

    def position(self, batches_done: int) -> tuple[int, int]:
        """(epoch, batch in epoch) after ``batches_done`` steps in total."""
        return divmod(batches_done, self.batches_per_epoch)

    def state(self, batches_done: int) -> dict[str, Any] | None:
        return None  # the position is a pure function of batches_done


def episode_lengths(facts: DatasetFacts, split: str) -> np.ndarray:
    """Frames per episode of ``split`` (train: after ``data.max_frames``): what orders are cut from."""
    return np.array([e.length for e in facts.episodes.get(split, ())], np.int64)
