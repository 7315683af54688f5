"""A new drivelab dataset written by an importer: created, locked, filled, or removed whole.

Importers share this instead of each creating a store: the store is made by
`DatasetStore.create` (refuses an existing path), every episode is committed by
`drivelab.data.episode_writer.write_episode` (staging -> rename -> marker, like the collector),
the root attrs are changed under the writer lock, and an import that raises half-way removes
the folder it created, so a failed import leaves nothing half-written.

The removal is deterministic: zarr's writes still in flight when the import failed (Ctrl-C, a
full disk) are waited for first (`episode_writer.discard_store`), and a second Ctrl-C cannot cut the
removal short; otherwise a late chunk write recreates ``OUT/_staging/...`` after the removal, a
skeleton without ``zarr.json`` that blocks the rerun. A full disk and Ctrl-C each end as one line.
"""

from __future__ import annotations

import errno
import math
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from drivelab.data.episode_writer import discard_store, write_episode
from drivelab.data.records import DatasetError, DatasetMeta, EpisodeRecord
from drivelab.data.store import DatasetStore, interrupted_skeleton, skeleton_hint
from drivelab.errors import DrivelabError, Interrupted
from drivelab.memory import available_bytes, format_bytes
from drivelab.outputs import protected_owner

#: errno values that mean "the disk cannot take more": reported as one line, never a traceback.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: One episode is held decoded (and stacked once) while it is written: its frames times this.
EPISODE_COPIES = 2


class InteropError(DrivelabError):
    """An input that is not the format it claims to be, or an output that cannot be written."""


def check_new_dataset(out: Path) -> None:
    """Refuse, before any work, an ``--out`` that exists or lies inside a drivelab dataset."""
    if interrupted_skeleton(out) is not None:
        raise InteropError(skeleton_hint(out))
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
    """Create the store at ``out`` under its writer lock; remove it whole if the block raises.

    Ctrl-C becomes `Interrupted` and a full disk one `InteropError`, both saying nothing was
    written; either way ``out`` is gone when this returns (see `discard_store`).
    """
    try:
        store = DatasetStore.create(out, meta)  # a DatasetError from it means nothing was made
    except DatasetError:
        raise
    except BaseException as exc:  # after mkdir: the folder is ours
        discard_store(out)
        _raise_one_line(out, exc)
        raise
    try:
        with store.writer_lock():  # keeps `data verify --remove-leftovers` off it
            yield DatasetOut(store)
    except BaseException as exc:
        discard_store(out)  # ours: created above, never pre-existing
        _raise_one_line(out, exc)
        raise


def _raise_one_line(out: Path, exc: BaseException) -> None:
    """Raise the one-line error a user sees for ``exc`` (Ctrl-C, a full disk); else return."""
    if isinstance(exc, KeyboardInterrupt):
        raise Interrupted(f"the import into {out} was stopped; nothing was written "
                          "(the partial dataset was removed): run it again") from None
    if is_disk_full(exc):
        raise InteropError(f"{out}: the disk is full (no space left on device); nothing was written "
                           "(the partial dataset was removed): free some space or choose another --out") from None


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk cannot take more."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and (exc.errno in DISK_FULL or "No space left on device" in str(exc)):
            return True  # pyarrow's write errors carry the errno in their text only
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def check_import_fits(out: Path, frame_shape: Sequence[int], episode_frames: int, disk_bytes: int,
                      fix: str) -> None:
    """Refuse, with the figures and before anything is created, an import that cannot fit.

    Memory: one episode of ``episode_frames`` frames is held decoded while it is written
    (`EPISODE_COPIES` copies), which must fit in three quarters of what is available now (as the
    loader's RAM cache is judged). Disk: ``disk_bytes`` is what the import needs at least; the
    file system holding ``out`` must have that much free. ``fix`` ends the memory refusal.
    """
    frame = math.prod(int(x) for x in frame_shape)  # Python ints: a bogus shape cannot overflow
    need = EPISODE_COPIES * episode_frames * frame
    have = available_bytes()
    if need > 0.75 * have:
        dims = "x".join(str(int(x)) for x in frame_shape)
        raise InteropError(
            f"frames of {dims} take about {format_bytes(need)} of memory for an episode of "
            f"{episode_frames} frames while it is written, but {format_bytes(have)} is available: "
            f"{fix} (nothing was written)"
        )
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return
    if disk_bytes > free:
        raise InteropError(
            f"--out {out}: the import needs at least {format_bytes(disk_bytes)} on disk but "
            f"{format_bytes(free)} is free there: free some space or choose another --out "
            "(nothing was written)"
        )


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
