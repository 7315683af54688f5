"""Epoch orders: the plain shuffled epochs, and the epoch-based balancing schemes.

The plain order is a pure function of (seed, epoch, batch in epoch): epoch ``e`` visits the
training samples in the permutation drawn from ``default_rng([seed, e])``, and DDP rank ``r``
takes its slice of each global batch. The trainer's data position is therefore just the batch
count, and a resumed run reads exactly the batches an uninterrupted run would have read.

Epoch-based schemes (`v1`, `v4`, `normalized_output`, `inverse_frequency`, `drivelab.order.build`)
draw a new balanced order every epoch, read the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from drivelab.order.base import RankedOrder
from drivelab.processor.completion import InputError


class EpochBatchSampler(RankedOrder):
    """Index lists for one rank, epoch after epoch, from batch ``start`` on (a resumed run's batch count).

    Epoch ``e`` is ``default_rng([seed, e]).permutation(n)`` cut into global batches of
    ``batch_size * world_size`` (the incomplete tail is dropped so every step has the same
    shape); rank ``r`` takes the ``r``-th ``batch_size`` slice of each global batch.
    """

    def __init__(
        self, samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0
    ) -> None:
        super().__init__(batch_size, seed, rank, world_size, start)
        self.samples = samples
        self.batches_per_epoch = samples // self.global_batch
        if self.batches_per_epoch < 1:
            raise InputError(
                f"the training split has {samples} samples, fewer than one batch of "
                f"{self.global_batch} (train.batch_size {batch_size} x {world_size} device(s)): "
                "lower train.batch_size or collect more data"
            )

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.samples)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, batch = self.position(self.start_batch)
        while True:
            order = self.permutation(epoch)
            for b in range(batch, self.batches_per_epoch):
                yield self.mine(order[b * self.global_batch : (b + 1) * self.global_batch]).tolist()
            epoch, batch = epoch + 1, 0


class SchemeBatchSampler(RankedOrder):
    """Epoch ``e`` reads ``order(e)`` (a balanced index array) cut into global batches.

    Orders may differ in length between epochs (``normalized_output`` keeps a random number of
    frames), so the position after N batches walks the per-epoch batch counts (cached).
    """

    def __init__(
        self,
        order: Callable[[int], np.ndarray],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        what: str = "balanced order",
    ) -> None:
        super().__init__(batch_size, 0, rank, world_size, start)  # the seed is in ``order``
        self.order = order
        self._orders: dict[int, np.ndarray] = {}
        self._lengths: list[int] = []
        first = self._epoch_batches(0)
        if first < 1:
            raise InputError(
                f"the {what} has {len(self._order(0))} samples per epoch, fewer than one batch of "
                f"{self.global_batch}: lower train.batch_size or use coarser bins"
            )
        self.batches_per_epoch = first

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) > 2:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = np.asarray(self.order(epoch), np.int64)
        return self._orders[epoch]

    def _epoch_batches(self, epoch: int) -> int:
        while len(self._lengths) <= epoch:
            e = len(self._lengths)
            self._lengths.append(len(self._order(e)) // self.global_batch)
        return self._lengths[epoch]

    def position(self, batches_done: int) -> tuple[int, int]:
        epoch, left = 0, batches_done
        while left >= self._epoch_batches(epoch) > 0:
            left -= self._epoch_batches(epoch)
            epoch += 1
        return epoch, left

    def __iter__(self) -> Iterator[list[int]]:
        epoch, batch = self.position(self.start_batch)
        while True:
            order = self._order(epoch)
            for b in range(batch, self._epoch_batches(epoch)):
                yield self.mine(order[b * self.global_batch : (b + 1) * self.global_batch]).tolist()
            epoch, batch = epoch + 1, 0
