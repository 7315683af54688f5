"""Charles' trainer buffers, the `v2` and `v3` balancing schemes' batch order.

One buffer per output, filled from that output's endless balanced stream; a batch removes the
same number of random samples from every buffer (without replacement) and the buffers are
refilled. `v2` gives every output a whole batch of its own (helper-model training,
`drivelab.train.helper_models`); `v3` splits one batch evenly over the outputs and every sample
keeps all its labels. The position after N batches is a small state (the buffers and the
streams' positions) saved in the checkpoint, so N + resume + N batches reads exactly what 2N
batches read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from drivelab.config import BalanceConfig
from drivelab.order.balance import BinnedLabels, balance_v2
from drivelab.order.base import RankedOrder
from drivelab.processor.completion import InputError


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (numpy's balancing functions take an int)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class BalancedStream:
    """One output's endless balanced sequence: round r is a v2 set seeded by (seed, output, r)."""

    def __init__(self, binned: BinnedLabels, output: str, seed: int, key: int, skip_empty: bool) -> None:
        self.binned = BinnedLabels({output: binned.index[output]}, {output: binned.labels[output]})
        self.output = output
        self.seed = seed
        self.key = key
        self.skip_empty = skip_empty
        self.round = 0
        self.offset = 0
        self._cached: tuple[int, np.ndarray] | None = None
        self._round(0)  # raises now if the output's bins leave the stream empty

    def _round(self, r: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != r:
            sets = balance_v2(self.binned, mix_seed(self.seed, self.key, r), skip_empty=self.skip_empty)
            self._cached = (r, sets[self.output])
        return self._cached[1]

    def take(self, n: int) -> np.ndarray:
        parts: list[np.ndarray] = []
        while n > 0:
            current = self._round(self.round)
            piece = current[self.offset : self.offset + n]
            parts.append(piece)
            n -= len(piece)
            self.offset += len(piece)
            if self.offset >= len(current):
                self.round, self.offset = self.round + 1, 0
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


class BufferBatchSampler(RankedOrder):
    """Charles' trainer buffers: per output, ``buffer_size`` samples, drawn without replacement.

    Every batch removes ``sizes[k] * world_size`` random samples from output k's buffer (rank r
    takes its slice) and refills the buffer from the output's balanced stream. The DataLoader
    asks for batches ahead of training, so the sampler keeps a snapshot of its state before each
    batch it hands out; the checkpoint after N batches saves snapshot N.
    """

    def __init__(
        self,
        binned: BinnedLabels,
        balance: BalanceConfig,
        batch_size: int,
        seed: int,
        helper: bool,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.outputs = binned.outputs
        n_out = len(self.outputs)
        self.helper_outputs: list[str] | None = list(self.outputs) if helper else None
        if helper:
            self.sizes = [batch_size] * n_out
        else:
            if batch_size < n_out:
                raise InputError(f"train.batch_size {batch_size} is smaller than the {n_out} balanced "
                                 f"outputs; scheme v3 draws from every output's buffer in each batch")
            base, rest = divmod(batch_size, n_out)
            self.sizes = [base + (1 if k < rest else 0) for k in range(n_out)]
        # samples per step on this rank (v2: one batch per output)
        super().__init__(sum(self.sizes), seed, rank, world_size, start)
        self.samples = binned.n
        self.batches_per_epoch = max(1, binned.n // self.global_batch)
        self.capacity = balance.buffer_size
        fill = int(np.ceil(balance.start_fill * balance.buffer_size))
        unique = binned.n
        if unique < fill:
            raise InputError(
                f"data.balance.buffer_size {balance.buffer_size} needs {fill} samples per buffer "
                f"before training starts ({balance.start_fill:.0%} full), the training split has "
                f"{unique}: lower data.balance.buffer_size"
            )
        need = max(self.sizes) * world_size
        if need > balance.buffer_size:
            raise InputError(f"data.balance.buffer_size {balance.buffer_size} is smaller than one "
                             f"batch's draw ({need}) from a buffer: raise it")
        self.streams = {o: BalancedStream(binned, o, seed, k, balance.skip_empty)
                        for k, o in enumerate(self.outputs)}
        if state is not None:
            self._restore(state)
        else:
            self.buffers = {o: self.streams[o].take(self.capacity) for o in self.outputs}
        self._snapshots: dict[int, dict[str, Any]] = {}
        self._generated = start

    def _capture(self) -> dict[str, Any]:
        return {
            "buffers": {o: b.copy() for o, b in self.buffers.items()},
            "streams": {o: [s.round, s.offset] for o, s in self.streams.items()},
        }

    def _restore(self, state: dict[str, Any]) -> None:
        buffers = state["buffers"]
        self.buffers = {o: np.array(np.asarray(buffers[o]), np.int64) for o in self.outputs}
        for o, (r, off) in state["streams"].items():
            self.streams[o].round, self.streams[o].offset = int(r), int(off)

    def fill_levels(self) -> dict[str, float]:
        return {o: len(b) / self.capacity for o, b in self.buffers.items()}

    def draw(self, batch_number: int) -> list[int]:
        """Batch ``batch_number``'s indices for this rank (output by output), refilling buffers."""
        parts: list[np.ndarray] = []
        for k, o in enumerate(self.outputs):
            buffer = self.buffers[o]
            total = self.sizes[k] * self.world_size
            rng = np.random.default_rng([self.seed, 104729, batch_number, k])
            picked = rng.choice(len(buffer), size=total, replace=False)
            drawn = buffer[picked]
            rest = np.delete(buffer, picked)
            self.buffers[o] = np.concatenate([rest, self.streams[o].take(self.capacity - len(rest))])
            parts.append(self.mine(drawn, self.sizes[k]))
        return np.concatenate(parts).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        number = self.start_batch
        while True:
            self._snapshots[number] = self._capture()
            indices = self.draw(number)
            number += 1
            self._generated = number
            yield indices

    def state(self, batches_done: int) -> dict[str, Any]:
        """The buffers and stream positions before batch ``batches_done + 1`` (for a checkpoint)."""
        for old in [n for n in self._snapshots if n < batches_done]:
            del self._snapshots[old]
        if batches_done in self._snapshots:
            snapshot = self._snapshots[batches_done]
        elif batches_done == self._generated:
            snapshot = self._capture()
        else:
            raise RuntimeError(f"buffer state of batch {batches_done} was not kept")  # a loop bug
        # tensors, not numpy arrays: trainer states are read back with torch.load(weights_only)
        return {
            "buffers": {o: torch.from_numpy(b.copy()) for o, b in snapshot["buffers"].items()},
            "streams": snapshot["streams"],
        }
