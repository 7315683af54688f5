"""The order training reads its samples in, and the loaders that read batches in that order.

Every batch order the trainer can run (`EpochBatchSampler` here, the balanced ones in
`drivelab.train.sampling`, the sequence ones in `drivelab.train.sequences`) is a `BatchOrder`:
the loop reads its sizes, its position and its saved state through that one protocol, whatever
the kind, so a new order cannot silently miss a piece of what a resume needs.

The plain order is a pure function of (seed, epoch, batch in epoch): epoch ``e`` visits the
training samples in the permutation drawn from ``default_rng([seed, e])``, and DDP rank ``r``
takes its slice of each global batch. The trainer's data position is therefore just two numbers,
and a resumed run reads exactly the batches an uninterrupted run would have read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from drivelab.data.loader import EpisodeFrameDataset
from drivelab.train.inputs import InputError


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


class EpochBatchSampler:
    """Index lists for one rank, epoch after epoch, starting at a saved data position.

    Epoch ``e`` is ``default_rng([seed, e]).permutation(n)`` cut into global batches of
    ``batch_size * world_size`` (the incomplete tail is dropped so every step has the same
    shape); rank ``r`` takes the ``r``-th ``batch_size`` slice of each global batch.
    """

    helper_outputs: list[str] | None = None

    def __init__(
        self,
        samples: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_epoch: int = 0,
        start_batch: int = 0,
    ) -> None:
        self.samples = samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_epoch = start_epoch
        self.start_batch = start_batch
        self.global_batch = batch_size * world_size
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
        epoch, batch = self.start_epoch, self.start_batch
        lo = self.rank * self.batch_size
        while True:
            order = self.permutation(epoch)
            for b in range(batch, self.batches_per_epoch):
                start = b * self.global_batch + lo
                yield order[start : start + self.batch_size].tolist()
            epoch, batch = epoch + 1, 0

    def position(self, batches_done: int) -> tuple[int, int]:
        """(epoch, batch in epoch) after ``batches_done`` steps in total."""
        return divmod(batches_done, self.batches_per_epoch)

    def state(self, batches_done: int) -> None:
        return None  # the position is a pure function of batches_done


def val_batches(samples: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Validation index lists for one rank; every rank gets the same number of batches.

    Sample ``i`` goes to rank ``i % world_size``; ranks short of a full last batch get padding
    index ``-1`` (masked out of the sums), so no rank waits alone in a collective.
    """
    mine = list(range(rank, samples, world_size))
    per_rank = -(-samples // world_size)
    mine += [-1] * (per_rank - len(mine))
    return [mine[i : i + batch_size] for i in range(0, per_rank, batch_size)]


class MaskedBatches(torch.utils.data.Dataset):
    """A dataset view where index ``-1`` yields a copy of sample 0 marked ``valid = 0``."""

    def __init__(self, base: EpisodeFrameDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        valid = torch.tensor([i >= 0 for i in indices], dtype=torch.float32)
        batch = self.base.__getitems__([max(i, 0) for i in indices])
        batch["valid"] = valid
        return batch
