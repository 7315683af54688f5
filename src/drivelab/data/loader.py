"""Torch datasets over the Zarr store: samples of frames (+ stacked frames, + history windows).

A sample at step ``t`` of an episode is:

- ``frames``: uint8 [3k, H, W] — frames t-k+1 .. t stacked on the channel axis (model_0006),
  the first frame repeated before the episode start;
- ``history``: float32 [T, S] — telemetry t-T+1 .. t of the chosen signals. Telemetry at ``t`` is
  what the car knew *before* acting (the previously executed controls), so a history window can
  never contain the current label: the Charles bug is ruled out by the data layout itself;
- ``targets``: {output: float32 [size]} — the expert's action at ``t``.

The layout (stack, window, delta targets) is `drivelab.processor.layout`'s, which the runtime
streams with too. Frames stay uint8 until the batch reaches the device (the processor's
`InputPipeline`), which keeps the loader cheap and lets the GPU do the float conversion.
Episodes are decoded whole, once, into an LRU cache bounded in bytes: Zarr chunks hold many
frames, and decoding a chunk per random sample would cost ~chunk_frames times more than needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from drivelab.data.array_checks import array_problems
from drivelab.data.records import ArraySpec, DatasetError, EpisodeInfo, episode_name
from drivelab.data.store import DatasetStore
from drivelab.memory import available_bytes, format_bytes
from drivelab.processor.fit import DataSpec, PolicyNeeds, check_fit
from drivelab.processor.layout import DeltaActions, FrameStack, Window
from drivelab.processor.state import ProcessorState


@dataclass
class _Episode:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    history: np.ndarray  # float32 [T, S]
    targets: dict[str, np.ndarray]  # name -> float32 [T, size]

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.history.nbytes + sum(v.nbytes for v in self.targets.values())


class EpisodeCache:
    """Whole decoded episodes, least recently used evicted beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, _Episode] = OrderedDict()
        self._bytes = 0
        self.misses = 0

    def get(self, key: int) -> _Episode | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: int, item: _Episode) -> None:
        self.misses += 1
        self._items[key] = item
        self._bytes += item.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes


class DecodedEpisodes:
    """Decoded episodes kept across datasets of one process (the live trainer's periods).

    A committed episode never changes, so an episode decoded for one period serves every later
    period that reads it with the same layout (outputs, history signals, delta outputs): a
    period's start-up then decodes only the episodes committed since, instead of a RAM cache
    that grows with the dataset. Unbounded, like ``data.cache: ram`` itself; only that cache
    uses it.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[object, ...], _Episode] = {}

    def get(self, key: tuple[object, ...]) -> _Episode | None:
        return self._items.get(key)

    def put(self, key: tuple[object, ...], item: _Episode) -> None:
        self._items[key] = item

    def __len__(self) -> int:
        return len(self._items)


def first_episodes(episodes: Sequence[EpisodeInfo], max_frames: int, where: str) -> list[EpisodeInfo]:
    """The split's first whole episodes (stored order) whose frames add up to at most ``max_frames``.

    Whole episodes, not a frame sample: a smaller dataset is then what recording fewer
    demonstrations would have given (kkelchte's 100K/50K/20K/10K study), and every statistic the
    processor takes from per-episode moments stays exact. The same cap gives the same frames on
    every run and machine.
    """
    kept: list[EpisodeInfo] = []
    total = 0
    for episode in episodes:
        if total + episode.length > max_frames:
            break
        kept.append(episode)
        total += episode.length
    if not kept:
        raise DatasetError(
            f"data.max_frames={max_frames} is below the first episode of {where} "
            f"({episodes[0].length} frames): raise it to at least {episodes[0].length}"
        )
    return kept


def finite_signal(store: DatasetStore, index: int, key: str) -> np.ndarray:
    """A float signal of an episode, refused if it holds NaN/Inf.

    The store refuses NaN at commit time, so a non-finite value here means the array was
    damaged afterwards; fed to the policy it would surface as a "non-finite loss" that
    blames the learning rate. Checked once per decoded episode (signals are small).
    """
    values = store.read_array(index, key).astype(np.float32, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        raise DatasetError(
            f"{store.path}: episode {episode_name(index)} array {key} holds {bad} NaN/Inf "
            f"value(s), which the policy would read as input or target: run "
            f"`drivelab data verify {store.path}`"
        )
    return values


#: Decoded episodes a split keeps in memory by default (`EpisodeCache`).
CACHE_BYTES = 4 << 30


class EpisodeFrameDataset(Dataset):
    """Samples (frame stack, history window, targets) from one split of a dataset."""

    def __init__(
        self,
        store: DatasetStore,
        split: str,
        outputs: Sequence[str],
        frames: int = 1,
        history_signals: Sequence[str] = (),
        history_length: int = 0,
        cache_bytes: int = CACHE_BYTES,
        delta_outputs: Sequence[str] = (),
        max_frames: int | None = None,
        decoded: DecodedEpisodes | None = None,
    ) -> None:
        self._lay_out(outputs, frames, history_signals, history_length, delta_outputs)
        needs = PolicyNeeds(
            outputs=tuple(self.outputs),
            delta_outputs=tuple(self.delta_outputs),
            history=dict.fromkeys(self.history_signals),
        )
        check_fit(DataSpec.of_dataset(store), needs, who="these samples", error=DatasetError)
        episodes = store.split_episodes(split)
        if not episodes:
            raise DatasetError(
                f"{store.path} has no committed episodes in the {split!r} split: collect with "
                f"--{split}-episodes K (or pick another split)"
            )
        if max_frames is not None:
            episodes = first_episodes(episodes, max_frames, f"{store.path} {split!r}")
        self._open(store, split, episodes, cache_bytes, decoded)

    @classmethod
    def of_processor(
        cls,
        store: DatasetStore,
        split: str,
        episodes: Sequence[EpisodeInfo],
        state: ProcessorState,
        decoded: DecodedEpisodes | None = None,
    ) -> EpisodeFrameDataset:
        """The samples ``state`` reads from ``episodes`` of ``store``: what the trainer opens.

        The state and the episode list come from this dataset's facts (`drivelab.data.facts`;
        `drivelab.processor.completion.complete` ran the fit check and refused an empty
        split), so neither the store's listing nor `check_fit` is asked again.
        """
        dataset = cls.__new__(cls)
        dataset._lay_out(state.targets.outputs, state.frames.stack, state.history.signals,
                         state.history.length, tuple(state.targets.delta))
        dataset._open(store, split, episodes, CACHE_BYTES, decoded)
        return dataset

    def _lay_out(
        self, outputs: Sequence[str], frames: int, history_signals: Sequence[str], history_length: int,
        delta_outputs: Sequence[str],
    ) -> None:
        """The sample layout: outputs, frame stack, history window, delta targets."""
        self.outputs = list(outputs)
        # targets of these outputs are changes of the last executed action (telemetry of the
        # same name, recorded before acting): Charles' "discrete delta" heads
        self.delta_outputs = list(delta_outputs)
        self.k = int(frames)
        self.history_signals = list(history_signals)
        self.history_length = int(history_length)
        if self.k < 1:
            raise DatasetError(f"frames must be >= 1 (got {self.k})")
        if self.history_signals and self.history_length < 1:
            raise DatasetError("history signals are set but the history length is < 1")
        self.stack = FrameStack(self.k)
        self.window = Window(max(self.history_length, 1))
        self.delta = DeltaActions(tuple(self.delta_outputs))

    def _open(
        self, store: DatasetStore, split: str, episodes: Sequence[EpisodeInfo], cache_bytes: int,
        decoded: DecodedEpisodes | None,
    ) -> None:
        """The split's episodes, checked from metadata, and their cache."""
        self.store = store
        self.decoded = decoded
        self.split = split
        self.episodes: list[EpisodeInfo] = list(episodes)
        self._check_episodes()
        lengths = np.array([e.length for e in self.episodes], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(lengths)])
        self._cache = EpisodeCache(cache_bytes)
        sizes = {s.name: s.size for s in store.meta.telemetry}
        self.history_size = sum(sizes[s] for s in self.history_signals)

    def _needed_arrays(self) -> list[ArraySpec]:
        meta = self.store.meta
        actions = {s.name: s.size for s in meta.actions}
        telemetry = {s.name: s.size for s in meta.telemetry}
        specs = [ArraySpec("frames", "uint8", tuple(meta.frame_shape))]
        specs += [ArraySpec(f"actions/{o}", "float32", (actions[o],)) for o in self.outputs]
        for name in dict.fromkeys([*self.history_signals, *self.delta_outputs]):
            specs.append(ArraySpec(f"telemetry/{name}", "float32", (telemetry[name],)))
        return specs

    def _check_episodes(self) -> None:
        """Refuse damaged groups and missing or wrong-shaped arrays now, from metadata only.

        Found mid-training they would be an `IndexError` or `KeyError` from deep inside a
        DataLoader worker; here they are one line naming the episode and the array.
        """
        path = self.store.path
        damaged = self.store.damaged()
        if damaged:
            raise DatasetError(
                f"{path} has {len(damaged)} damaged episode group(s), first {damaged[0]}; their "
                f"split cannot be read, so using the rest would silently change the data: run "
                f"`drivelab data verify {path}`"
            )
        specs = self._needed_arrays()
        for info in self.episodes:
            problems = array_problems(self.store, info, specs)
            if problems:
                raise DatasetError(
                    f"{path}: episode {info.name}: {problems[0][1]}: run `drivelab data verify {path}`"
                )

    def decoded_bytes(self) -> int:
        """Bytes the split takes decoded (frames, history, targets), from metadata alone."""
        meta = self.store.meta
        per_step = int(np.prod(meta.frame_shape)) + 4 * (self.history_size + len(self.outputs))
        return int(self._starts[-1]) * per_step

    def preload(self, what: str = "the RAM cache") -> None:
        """Decode every episode of the split now and keep all of them (no eviction).

        Refused with the figures when the split does not fit in the memory available now
        (leaving a quarter for the trainer): a cache that swaps is slower than no cache.
        """
        need = self.decoded_bytes()
        free = available_bytes()
        if need > 0.75 * free:
            raise DatasetError(
                f"{what}: the {self.split!r} split of {self.store.path} takes {format_bytes(need)} "
                f"decoded, but only {format_bytes(free)} of memory is available: set "
                "data.cache=none (decode from Zarr while training) or use fewer episodes"
            )
        self._cache = EpisodeCache(max(need, self._cache.max_bytes))
        for pos in range(len(self.episodes)):
            self._episode(pos)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _episode(self, pos: int) -> _Episode:
        ep = self._cache.get(pos)
        if ep is None and self.decoded is not None:
            ep = self.decoded.get(self._decoded_key(pos))
            if ep is not None:
                self._cache.put(pos, ep)
        if ep is None:
            index = self.episodes[pos].index
            frames = self.store.read_array(index, "frames")
            t = frames.shape[0]
            if self.history_signals:
                history = np.concatenate(
                    [self.signal(index, f"telemetry/{s}") for s in self.history_signals], axis=1
                )
            else:
                history = np.zeros((t, 0), np.float32)
            actions = {o: self.signal(index, f"actions/{o}") for o in self.outputs}
            last = {o: self.signal(index, f"telemetry/{o}") for o in self.delta_outputs}
            targets = self.delta.targets(actions, last)
            ep = _Episode(frames, history, targets)
            self._cache.put(pos, ep)
            if self.decoded is not None:
                self.decoded.put(self._decoded_key(pos), ep)
        return ep

    def _decoded_key(self, pos: int) -> tuple[object, ...]:
        """What fixes an episode's decoded arrays: the store, the episode and the layout."""
        info = self.episodes[pos]
        return (str(self.store.path), info.index, info.length, tuple(self.outputs),
                tuple(self.history_signals), tuple(self.delta_outputs))

    def signal(self, index: int, key: str) -> np.ndarray:
        """A float signal of an episode, refused if it holds NaN/Inf (`finite_signal`)."""
        return finite_signal(self.store, index, key)

    def _gather(self, pos: int, steps: np.ndarray) -> dict[str, np.ndarray]:
        ep = self._episode(pos)
        out = {"frames": self.stack.gather(ep.frames, steps)}
        if self.history_signals:
            out["history"] = self.window.gather(ep.history, steps)
        for o in self.outputs:
            out[f"target/{o}"] = ep.targets[o][steps]
        return out

    def gather(self, pos: int, steps: np.ndarray) -> dict[str, np.ndarray]:
        """Samples at ``steps`` of the ``pos``-th episode, as arrays (BPTT reads whole windows)."""
        return self._gather(pos, np.asarray(steps, np.int64))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([index])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once: one vectorised gather per episode touched."""
        idx = np.asarray(indices, np.int64)
        pos = np.searchsorted(self._starts, idx, side="right") - 1
        steps = idx - self._starts[pos]
        parts: dict[str, list[np.ndarray]] = {}
        order = np.argsort(pos, kind="stable")
        for p in np.unique(pos):
            sel = order[pos[order] == p]
            for key, value in self._gather(int(p), steps[sel]).items():
                parts.setdefault(key, []).append(value)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return {
            key: torch.from_numpy(np.concatenate(chunks)[inverse]) for key, chunks in parts.items()
        }


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`__getitems__` already returns a batch; the DataLoader's collate must leave it alone."""
    return batch

