"""A new drivelab dataset written by an importer: created, locked, filled, or removed whole.

Importers share this instead of each creating a store: the store is made by
`DatasetStore.create` (refuses an existing path), every episode is committed by
`drivelab.data.episode_writer.write_episode` (staging -> rename -> marker, like the collector),
the root attrs are changed under the writer lock, and an import that raises half-way removes
the folder it created, so a failed import leaves nothing half-written.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from drivelab.data.episode_writer import write_episode
from drivelab.data.records import DatasetMeta, EpisodeRecord
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.outputs import protected_owner


class InteropError(DrivelabError):
    """An input that is not the format it claims to be, or an output that cannot be written."""


def check_new_dataset(out: Path) -> None:
    """Refuse, before any work, an ``--out`` that exists or lies inside a drivelab dataset."""
    if out.exists() or out.is_symlink():
        raise InteropError(f"{out} already exists: choose a new --out (nothing was overwritten)")
    owner = protected_owner(out)
    if owner is not None:
        raise InteropError(f"--out {out}: refusing to write there, {owner}; choose a path outside it")


class DatasetOut:
    """The dataset being imported: `add` commits one episode; the splits are set at the end."""

    def __init__(self, store: DatasetStore) -> None:
        self.store = store
        self.episodes = 0
        self.frames = 0

    def add(self, record: EpisodeRecord) -> int:
        """Commit ``record`` as the next episode (one writer per episode) and return its index."""
        index = self.episodes
        write_episode(self.store, index, record)
        self.episodes += 1
        self.frames += len(record)
        return index


@contextmanager
def dataset_out(out: Path, meta: DatasetMeta) -> Iterator[DatasetOut]:
    """Create the store at ``out`` under its writer lock; remove it if the block raises."""
    store = DatasetStore.create(out, meta)
    try:
        with store.writer_lock():  # keeps `data verify --remove-leftovers` off it
            yield DatasetOut(store)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # ours: created above, never pre-existing
        raise


def tail_splits(episodes: int, val: int, test: int) -> tuple[list[int], list[int]]:
    """The val and test episodes as `drivelab collect` picks them: the last ones, test last."""
    if val < 0 or test < 0 or val + test >= max(episodes, 1):
        raise InteropError(
            f"--val-episodes {val} + --test-episodes {test} leaves no training episode out of "
            f"{episodes}: lower them"
        )
    first_test = episodes - test
    return list(range(first_test - val, first_test)), list(range(first_test, episodes))


def check_split_counts(val: int, test: int) -> None:
    """Negative split sizes are refused before the input is read."""
    if val < 0 or test < 0:
        raise InteropError(f"--val-episodes {val} / --test-episodes {test}: use counts >= 0")


def fit_frame(rgb: np.ndarray, size: Sequence[int] | None) -> np.ndarray:
    """``rgb`` (uint8 HxWx3) resized to ``size`` = (H, W) when given, else unchanged."""
    if size is None or tuple(rgb.shape[:2]) == tuple(size):
        return rgb
    img = Image.fromarray(rgb).resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img, np.uint8)


def check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """``--size H W``: both at least 8 px (the smallest frame a backbone accepts)."""
    if size is None:
        return None
    if len(size) != 2 or min(size) < 8:
        raise InteropError(f"--size {' '.join(map(str, size))}: give height and width, each at least 8 px")
    return int(size[0]), int(size[1])
