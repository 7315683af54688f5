"""Sequences of frames for a recurrent policy: kkelchte/pilot's three ways to feed an LSTM.

Each sampler yields, per batch, one *row* per sequence: ``(episode, start, count, reset, last)``
— frames ``start .. start+count-1`` of the split's ``episode``-th episode, whether the row starts
from a zero state (``reset``) and whether it is the episode's last window (``last``). A batch is a
pure function of (seed, batch number) for ``full`` and ``window``; ``sliding`` moves through
every row's episodes in order, so its position is a cursor per row, computable from the batch
number and saved in the trainer state as it is. `drivelab.train.sequence_batches` turns rows into
tensors. Every sampler is a `drivelab.order.base.RankedOrder`.

- ``full`` (F-BPTT): epoch ``e`` visits the episodes in ``default_rng([seed, e])`` order, B whole
  episodes per batch, cut to the shortest (``cut``) or padded to the longest with a mask (``pad``).
- ``window`` (WW-TBPTT): every batch draws B windows uniformly over all (episode, start) pairs
  whose window fits, from ``default_rng([seed, batch])`` — every frame is about equally likely, so
  long episodes are not under-sampled. Optionally each row carries the earlier frames of its
  episode (every k-th) for a no-gradient warmup of the state.
- ``sliding`` (S-TBPTT): row r plays, epoch after epoch, the episodes ``perm_e[r::R]`` (R rows in
  all), window after window ``step`` frames apart; the loop carries the state from batch to batch
  and zeroes a row when its next episode starts. The last window of an episode may be short; its
  padding is masked.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from drivelab.config import BPTTConfig
from drivelab.errors import DrivelabError
from drivelab.order.base import RankedOrder, episode_lengths
from drivelab.processor.facts import DatasetFacts

#: One batch row: (episode position in the split, start step, frames read, zero state?, last window?)
Row = tuple[int, int, int, bool, bool]

#: ``full``/``cut`` warns when a batch layout drops more than this share of the training frames.
CUT_WARN_SHARE = 0.10


class SequenceError(DrivelabError):
    """The data cannot be cut into the sequences the config asks for."""


class BPTTWarning(UserWarning):
    """Sequence training will run, but not quite as the config suggests (frames dropped)."""


def check_sequence_data(facts: DatasetFacts, split: str) -> np.ndarray:
    """Episode lengths of a split that can train a recurrent policy, or one clear error.

    A recurrent policy learns from time: a dataset of unordered samples (an image-classification
    import, one "episode" per class) or of one-frame episodes has no sequence to learn from.
    """
    path = facts.source
    if facts.attrs.get("task") == "classification":
        raise SequenceError(
            f"{path} is an image-classification dataset (its episodes are classes, not drives): "
            "a recurrent policy (model.recurrent) needs recorded episodes; drop model.recurrent"
        )
    lengths = episode_lengths(facts, split)
    if lengths.max(initial=0) < 2:
        raise SequenceError(
            f"{path} has no episode boundaries to learn from: every {split!r} episode holds a "
            "single frame; a recurrent policy (model.recurrent) needs recorded episodes"
        )
    return lengths


# ---------------------------------------------------------------------------- samplers
class _Sampler(RankedOrder):
    """The part the three sequence orders share: rows per global batch, frames counted nominally.

    ``batch_size`` counts rows per rank; ``global_batch`` frames per global batch (nominal, for
    samples/s in the logs); the saved state is the data position.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, rank: int, world_size: int,
                 start_batch: int) -> None:
        super().__init__(batch_size, seed, rank, world_size, start_batch)
        self.lengths = lengths

    def state(self, batches_done: int) -> dict[str, object]:
        """The data position after ``batches_done`` batches, as plain values for the checkpoint."""
        epoch, in_epoch = self.position(batches_done)
        return {"epoch": epoch, "batch_in_epoch": in_epoch}


class FullSampler(_Sampler):
    """F-BPTT: B whole episodes per batch from a zero state; epochs are episode permutations."""

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        seed: int,
        policy: str = "cut",
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> None:
        super().__init__(lengths, batch_size, seed, rank, world_size, start_batch)
        self.policy = policy
        self.batches_per_epoch = len(lengths) // self.rows
        if self.batches_per_epoch < 1:
            raise SequenceError(
                f"train.batch_size={batch_size} x {world_size} device(s) asks for more whole "
                f"episodes per batch than the training split has ({len(lengths)}): lower "
                "train.batch_size (F-BPTT used 1)"
            )
        self.global_batch = max(1, round(self._mean_frames_per_batch()))

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.lengths))

    def episodes(self, batch: int) -> np.ndarray:
        """The global batch's episodes (every rank's rows)."""
        epoch, in_epoch = divmod(batch, self.batches_per_epoch)
        order = self.permutation(epoch)
        return order[in_epoch * self.rows : (in_epoch + 1) * self.rows]

    def rows_of(self, batch: int) -> list[Row]:
        mine = self.mine(self.episodes(batch))
        lengths = [int(self.lengths[e]) for e in mine]
        shortest = min(lengths)
        return [
            (int(e), 0, shortest if self.policy == "cut" else n, True, True)
            for e, n in zip(mine, lengths, strict=True)
        ]

    def dropped_share(self) -> tuple[int, int]:
        """(frames cut away, frames) over the first epoch: what ``cut`` costs on this data."""
        dropped = total = 0
        for batch in range(self.batches_per_epoch):
            episodes = self.episodes(batch)
            for rank in range(self.world_size):
                part = self.lengths[episodes[rank * self.batch_size : (rank + 1) * self.batch_size]]
                dropped += int(part.sum() - part.min() * len(part))
                total += int(part.sum())
        return dropped, total

    def _mean_frames_per_batch(self) -> float:
        if self.policy == "pad":
            return float(self.lengths.mean()) * self.rows
        dropped, total = self.dropped_share()
        return (total - dropped) / max(self.batches_per_epoch, 1)

    def __iter__(self) -> Iterator[list[Row]]:
        batch = self.start_batch
        while True:
            yield self.rows_of(batch)
            batch += 1


class WindowSampler(_Sampler):
    """WW-TBPTT: B shuffled windows of ``window`` frames, uniform over all fitting windows."""

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        window: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> None:
        super().__init__(lengths, batch_size, seed, rank, world_size, start_batch)
        self.window = window
        if window > int(lengths.max()):
            raise SequenceError(
                f"train.bptt.window={window} is longer than every training episode (the longest "
                f"has {int(lengths.max())} frames): use a shorter window"
            )
        self.starts = np.maximum(lengths - window + 1, 0)  # fitting windows per episode
        self._cumulative = np.cumsum(self.starts)
        self.global_batch = self.rows * window
        self.batches_per_epoch = max(1, int(lengths.sum()) // self.global_batch)

    def rows_of(self, batch: int) -> list[Row]:
        rng = np.random.default_rng([self.seed, batch])
        picks = rng.integers(0, int(self._cumulative[-1]), size=self.rows)
        episodes = np.searchsorted(self._cumulative, picks, side="right")
        starts = picks - (self._cumulative[episodes] - self.starts[episodes])
        return [
            (int(e), int(s), self.window, True, False)
            for e, s in zip(self.mine(episodes), self.mine(starts), strict=True)
        ]

    def __iter__(self) -> Iterator[list[Row]]:
        batch = self.start_batch
        while True:
            yield self.rows_of(batch)
            batch += 1


@dataclass
class RowCursor:
    """Where one sliding row is: epoch, its k-th episode of that epoch, the window in it."""

    epoch: int = 0
    slot: int = 0
    window: int = 0


class SlidingSampler(_Sampler):
    """S-TBPTT: a fixed set of episodes per row, windows ``stride`` apart, state carried over."""

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        window: int,
        stride: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: Sequence[Sequence[int]] | None = None,
        start_batch: int = 0,
    ) -> None:
        super().__init__(lengths, batch_size, seed, rank, world_size, start_batch)
        self.window = window
        self.stride = stride
        if self.rows > len(lengths):
            raise SequenceError(
                f"train.batch_size={batch_size} x {world_size} device(s) = {self.rows} sliding "
                f"rows, but the training split has only {len(lengths)} episodes and each row "
                f"plays its own: use train.batch_size <= {len(lengths) // world_size}"
            )
        if window > int(lengths.max()):
            raise SequenceError(
                f"train.bptt.window={window} is longer than every training episode (the longest "
                f"has {int(lengths.max())} frames): use a shorter window"
            )
        self.global_batch = self.rows * window
        windows = sum(self.windows_in(int(n)) for n in lengths)
        self.batches_per_epoch = max(1, windows // self.rows)
        self.start = [RowCursor(*c) for c in start] if start is not None else [
            RowCursor() for _ in range(self.rows)
        ]
        if len(self.start) != self.rows:
            raise SequenceError(
                f"the saved sliding position has {len(self.start)} rows, this run has {self.rows}"
            )
        self._memo: tuple[int, list[RowCursor]] = (start_batch, [RowCursor(**vars(c)) for c in self.start])
        self._orders: dict[int, np.ndarray] = {}

    def windows_in(self, length: int) -> int:
        """Windows of an episode: starts 0, s, 2s, ... up to the first window reaching its end."""
        if length <= self.window:
            return 1
        return math.ceil((length - self.window) / self.stride) + 1

    def _order(self, epoch: int) -> np.ndarray:
        order = self._orders.get(epoch)
        if order is None:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.lengths))
            self._orders = {epoch: order, **{k: v for k, v in self._orders.items() if k >= epoch - 1}}
        return order

    def _episode(self, row: int, cursor: RowCursor) -> int:
        return int(self._order(cursor.epoch)[row + cursor.slot * self.rows])

    def _row(self, row: int, cursor: RowCursor) -> Row:
        episode = self._episode(row, cursor)
        length = int(self.lengths[episode])
        start = cursor.window * self.stride
        last = cursor.window + 1 >= self.windows_in(length)
        return (episode, start, min(self.window, length - start), cursor.window == 0, last)

    def _advance(self, row: int, cursor: RowCursor) -> None:
        length = int(self.lengths[self._episode(row, cursor)])
        cursor.window += 1
        if cursor.window >= self.windows_in(length):
            cursor.window = 0
            cursor.slot += 1
            if row + cursor.slot * self.rows >= len(self.lengths):
                cursor.slot = 0
                cursor.epoch += 1

    def cursors(self, batches_done: int) -> list[RowCursor]:
        """Every row's cursor after ``batches_done`` batches (walked from the nearest known)."""
        known, cursors = self._memo
        if batches_done < known:
            known, cursors = self.start_batch, self.start
        if batches_done < known:
            raise ValueError(f"batch {batches_done} is before this sampler's start ({known})")
        cursors = [RowCursor(**vars(c)) for c in cursors]
        for _ in range(batches_done - known):
            for row, cursor in enumerate(cursors):
                self._advance(row, cursor)
        self._memo = (batches_done, [RowCursor(**vars(c)) for c in cursors])
        return cursors

    def position(self, batches_done: int) -> tuple[int, int]:
        """(epoch every row has reached, batches since the first row entered it)."""
        epoch = min(c.epoch for c in self.cursors(batches_done))
        return epoch, max(0, batches_done - epoch * self.batches_per_epoch)

    def state(self, batches_done: int) -> dict[str, object]:
        epoch, in_epoch = self.position(batches_done)
        rows = [[c.epoch, c.slot, c.window] for c in self.cursors(batches_done)]
        return {"epoch": epoch, "batch_in_epoch": in_epoch, "rows": rows}

    def __iter__(self) -> Iterator[list[Row]]:
        cursors = [RowCursor(**vars(c)) for c in self.start]
        while True:
            yield [self._row(r, cursors[r]) for r in self.mine(range(self.rows))]
            for row, cursor in enumerate(cursors):
                self._advance(row, cursor)


def build_sampler(
    bptt: BPTTConfig,
    lengths: np.ndarray,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    state: dict[str, object] | None = None,
    batches_done: int = 0,
) -> FullSampler | WindowSampler | SlidingSampler:
    """The configured mode's sampler, starting at ``batches_done`` (its saved state on resume)."""
    if bptt.mode == "full":
        sampler: FullSampler | WindowSampler | SlidingSampler = FullSampler(
            lengths, batch_size, seed, bptt.full_policy, rank, world_size, batches_done
        )
    elif bptt.mode == "window":
        sampler = WindowSampler(lengths, batch_size, bptt.window, seed, rank, world_size, batches_done)
    elif bptt.mode == "sliding":
        rows = state.get("rows") if state else None
        sampler = SlidingSampler(
            lengths, batch_size, bptt.window, bptt.stride, seed, rank, world_size,
            start=rows,  # type: ignore[arg-type]
            start_batch=batches_done,
        )
    else:
        raise ValueError(f"no sequence sampler for train.bptt.mode={bptt.mode!r}")
    return sampler


def warn_if_cut_drops(sampler: FullSampler) -> None:
    """``full`` + ``cut`` over episodes of very different lengths throws frames away: say how many."""
    if sampler.policy != "cut":
        return
    dropped, total = sampler.dropped_share()
    if total and dropped / total > CUT_WARN_SHARE:
        warnings.warn(
            BPTTWarning(
                f"train.bptt.mode=full cuts each batch to its shortest episode: {dropped} of "
                f"{total} training frames ({100 * dropped / total:.0f}%) per epoch are never "
                "trained; use train.bptt.full_policy=pad or train.batch_size=1"
            ),
            stacklevel=2,
        )
