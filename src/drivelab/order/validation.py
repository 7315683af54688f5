"""Validation batches: every sample once, spread over the ranks, padded so no rank waits alone."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from drivelab.data.loader import EpisodeFrameDataset


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
