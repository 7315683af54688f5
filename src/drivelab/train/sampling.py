"""Balanced batch orders for training: Charles' v1-v4, inverse frequency and kkelchte's cap.

`drivelab.data.balance` says *which* samples each scheme picks; this module turns that into the
stream of index batches a trainer reads, with the two properties the trainer promises:

- **seeded**: every draw comes from a generator seeded by (seed, epoch) or (seed, batch), so the
  same config reads the same batches;
- **resumable**: the position after N batches is either a pure function of N (epoch-based
  schemes) or a small state (per-output buffers) saved in the checkpoint, so N + resume + N
  batches reads exactly what 2N batches read.

Epoch-based schemes (`v1`, `v4`, `normalized_output`, `inverse_frequency`) draw a new balanced
order every epoch. `v2`/`v3` use Charles' trainer buffers: one buffer per output, filled from that
output's endless balanced stream; a batch removes the same number of random samples from every
buffer (without replacement) and the buffers are refilled. `v2` gives every output a whole batch
of its own (helper-model training, `drivelab.train.helper_models`); `v3` splits one batch evenly
over the outputs and every sample keeps all its labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from drivelab.config import BalanceConfig, ExperimentConfig
from drivelab.data.balance import (
    BinnedLabels,
    balance_v1,
    balance_v2,
    balance_v4,
    inverse_frequency,
    normalized_output,
)
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.train.balance_labels import binned_train_labels
from drivelab.train.batches import BatchOrder, EpochBatchSampler
from drivelab.train.inputs import InputError


class BatchRequest(NamedTuple):
    """A batch's sample indices with its global batch number (seeds the batch's augmentation)."""

    number: int
    indices: list[int]


def numbered(batches: Any, start: int) -> Iterator[BatchRequest]:
    """Tag each index list of ``batches`` with its batch number, counting from ``start``."""
    for offset, indices in enumerate(batches):
        yield BatchRequest(start + offset, list(indices))


class NumberedSampler:
    """A batch order whose batches carry their number (a DataLoader iterates it once).

    Everything but the iteration is the wrapped order's, so it is a `BatchOrder` too.
    """

    def __init__(self, base: BatchOrder, start: int) -> None:
        self.base = base
        self.start = start
        self.batch_size = base.batch_size
        self.global_batch = base.global_batch
        self.batches_per_epoch = base.batches_per_epoch
        self.helper_outputs = base.helper_outputs

    def position(self, batches_done: int) -> tuple[int, int]:
        return self.base.position(batches_done)

    def state(self, batches_done: int) -> dict[str, Any] | None:
        return self.base.state(batches_done)

    def __iter__(self) -> Iterator[BatchRequest]:
        return numbered(self.base, self.start)


def _seed(*parts: int) -> int:
    """One 63-bit seed from several integers (numpy's balancing functions take an int)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------ epoch-based
class SchemeBatchSampler:
    """Epoch ``e`` reads ``order(e)`` (a balanced index array) cut into global batches.

    Orders may differ in length between epochs (``normalized_output`` keeps a random number of
    frames), so the position after N batches walks the per-epoch batch counts (cached).
    """

    helper_outputs: list[str] | None = None

    def __init__(
        self,
        order: Callable[[int], np.ndarray],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        what: str = "balanced order",
    ) -> None:
        self.order = order
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.global_batch = batch_size * world_size
        self.start = start
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
        epoch, batch = self.position(self.start)
        lo = self.rank * self.batch_size
        while True:
            order = self._order(epoch)
            for b in range(batch, self._epoch_batches(epoch)):
                begin = b * self.global_batch + lo
                yield order[begin : begin + self.batch_size].tolist()
            epoch, batch = epoch + 1, 0

    def state(self, batches_done: int) -> dict[str, Any] | None:
        return None  # the position is a pure function of batches_done


# ------------------------------------------------------------------------------ buffers
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
            sets = balance_v2(self.binned, _seed(self.seed, self.key, r), skip_empty=self.skip_empty)
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


class BufferBatchSampler:
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
        self.batch_size = sum(self.sizes)  # samples per step on this rank (v2: one batch per output)
        self.world_size = world_size
        self.rank = rank
        self.global_batch = self.batch_size * world_size
        self.seed = seed
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
        self.start = start
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
            lo = self.rank * self.sizes[k]
            parts.append(drawn[lo : lo + self.sizes[k]])
        return np.concatenate(parts).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        number = self.start
        while True:
            self._snapshots[number] = self._capture()
            indices = self.draw(number)
            number += 1
            self._generated = number
            yield indices

    def position(self, batches_done: int) -> tuple[int, int]:
        return divmod(batches_done, self.batches_per_epoch)

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


# ------------------------------------------------------------------------------ factory
def build_train_sampler(
    config: ExperimentConfig,
    dataset: EpisodeFrameDataset,
    rank: int,
    world_size: int,
    state: dict[str, Any] | None = None,
    binned: BinnedLabels | None = None,
) -> EpochBatchSampler | SchemeBatchSampler | BufferBatchSampler:
    """The training batch order for ``data.balance`` (``none``: a plain shuffled epoch order).

    ``state`` is a resumed run's trainer state: its batch count (and buffers) position the
    sampler exactly where the interrupted run was.
    """
    balance = config.data.balance
    batch_size = config.train.batch_size
    seed = config.seed
    done = int(state["batch"]) if state else 0
    if balance.scheme == "none":
        return EpochBatchSampler(
            len(dataset), batch_size, seed, rank, world_size,
            start_epoch=int(state["epoch"]) if state else 0,
            start_batch=int(state["batch_in_epoch"]) if state else 0,
        )
    if binned is None:
        binned = binned_train_labels(config, dataset)
    scheme = balance.scheme
    if scheme in ("v2", "v3"):
        saved = state.get("sampler") if state else None
        return BufferBatchSampler(binned, balance, batch_size, seed, helper=scheme == "v2",
                                  rank=rank, world_size=world_size, start=done, state=saved)
    global_batch = batch_size * world_size
    if scheme == "v1":
        def order(epoch: int) -> np.ndarray:
            rng = np.random.default_rng([seed, epoch])
            chosen = balance_v1(binned, _seed(seed, epoch), balance.rounds).indices
            return rng.permutation(chosen)
    elif scheme == "v4":
        def order(epoch: int) -> np.ndarray:
            rng = np.random.default_rng([seed, epoch])
            chosen = balance_v4(binned, _seed(seed, epoch), candidates=balance.candidates,
                                skip_empty=balance.skip_empty)
            return rng.permutation(chosen)
    elif scheme == "normalized_output":
        def order(epoch: int) -> np.ndarray:  # already laid out batch by batch
            return normalized_output(binned, _seed(seed, epoch), global_batch, balance.cap)
    else:  # inverse_frequency
        weights = inverse_frequency(binned, balance.power, balance.joint)
        p = weights / weights.sum()

        def order(epoch: int) -> np.ndarray:
            rng = np.random.default_rng([seed, epoch])
            return rng.choice(binned.n, size=binned.n, replace=True, p=p)
    return SchemeBatchSampler(order, batch_size, rank, world_size, start=done,
                              what=f"data.balance.scheme {scheme}")


def training_source(
    config: ExperimentConfig, inputs: Any, sampler: BatchOrder, start: int
) -> tuple[Any, BatchOrder]:
    """The dataset and batch sampler the training loader reads (augmented when configured).

    Augmented batches travel as `BatchRequest` (number + indices) so the worker that reads a
    batch seeds its augmentation with the batch's number, never with worker state.
    """
    aug = config.data.augment
    if aug is None:
        return inputs.train, sampler
    from drivelab.data.augment import AugmentedFrames, BatchAugmenter, resolve_flip_targets

    meta = inputs.store.meta
    flip = resolve_flip_targets(
        aug.flip_negate,
        config.model.outputs,
        {a.name: a.size for a in meta.actions},
        list(inputs.history_sizes),
        {t.name: t.size for t in meta.telemetry},
    )
    ranges = {a.name: (a.low if a.low is not None else -1.0, a.high if a.high is not None else 1.0)
              for a in meta.actions}
    augmenter = BatchAugmenter(aug, config.seed, flip, ranges)
    return AugmentedFrames(inputs.train, augmenter), NumberedSampler(sampler, start)
