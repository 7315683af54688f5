"""A new drivelab dataset written by an importer: created, locked, filled, or removed whole.

Every importer writes through this one path (GTSRB and ImageFolder in `drivelab.data.importers`,
donkeycar and LeRobot in `drivelab.interop`): `check_new_dataset` refuses a taken ``--out``
before any work, the store is made by `DatasetStore.create` (refuses an existing path), every
episode is committed by `drivelab.data.episode_writer.write_episode` (staging -> rename ->
marker, like the collector), the root attrs are changed under the writer lock, and an import
that raises half-way removes the folder it created, so a failed import leaves nothing
half-written.

The removal is deterministic: zarr's writes still in flight when the import failed (Ctrl-C, a
full disk) are waited for first (`episode_writer.discard_store`), and a second Ctrl-C cannot cut the
removal short; otherwise a late chunk write recreates ``OUT/_staging/...`` after the removal, a
skeleton without ``zarr.json`` that blocks the rerun. A full disk and Ctrl-C each end as one line;
the caller passes the error class its verb raises (the interop verbs' and the image importers').
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from drivelab.data.episode_writer import copy_episode, discard_store, write_episode
from drivelab.data.records import DatasetError, DatasetMeta, EpisodeRecord
from drivelab.data.skeleton import interrupted_skeleton, skeleton_hint
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError, Interrupted
from drivelab.outputs import protected_owner

#: (frames just committed, episodes done, episodes in all): what a progress bar is told
Progress = Callable[[int, int, int], None]

#: errno values that mean "the disk cannot take more": reported as one line, never a traceback.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def check_new_dataset(out: Path, error: type[DrivelabError]) -> None:
    """Refuse, before any work, an ``--out`` that exists or lies inside a drivelab dataset."""
    if interrupted_skeleton(out) is not None:
        raise error(skeleton_hint(out))
    if out.exists() or out.is_symlink():
        raise error(f"{out} already exists: choose a new --out (nothing was overwritten)")
    owner = protected_owner(out)
    if owner is not None:
        raise error(f"--out {out}: refusing to write there, {owner}; choose a path outside it")


class DatasetOut:
    """The dataset being imported: `add` commits one episode; the splits are set at the end."""

    def __init__(self, store: DatasetStore, on_progress: Progress | None = None, total: int = 0) -> None:
        self.store = store
        self.episodes = 0
        self.frames = 0
        self._on_progress = on_progress
        self._total = total

    def add(self, record: EpisodeRecord) -> int:
        """Commit ``record`` as the next episode (one writer per episode) and return its index."""
        index = self.episodes
        write_episode(self.store, index, record)
        return self._committed(index, len(record))

    def add_copy(self, source: Path, attrs: dict[str, Any]) -> int:
        """Commit an episode folder of a dataset with the same layout unchanged (`copy_episode`)."""
        index = self.episodes
        copy_episode(self.store, index, source, attrs)
        return self._committed(index, int(attrs["length"]))

    def _committed(self, index: int, frames: int) -> int:
        self.episodes += 1
        self.frames += frames
        if self._on_progress is not None:  # every importer's progress bar, from one place
            self._on_progress(frames, self.episodes, self._total)
        return index


@contextmanager
def dataset_out(out: Path, meta: DatasetMeta, error: type[DrivelabError], on_progress: Progress | None = None,
                total: int = 0) -> Iterator[DatasetOut]:
    """Create the store at ``out`` under its writer lock; remove it whole if the block raises.

    ``on_progress(frames, episodes done, total)`` hears of every committed episode (``total``:
    the episodes the caller will add, for the bar).

    Ctrl-C becomes `Interrupted` and a full disk one ``error``, both saying nothing was
    written; either way ``out`` is gone when this returns (see `discard_store`).
    """
    try:
        store = DatasetStore.create(out, meta)  # a DatasetError from it means nothing was made
    except DatasetError:
        raise
    except BaseException as exc:  # after mkdir: the folder is ours
        discard_store(out)
        _raise_one_line(out, exc, error)
        raise
    try:
        with store.writer_lock():  # keeps `data verify --remove-leftovers` off it
            yield DatasetOut(store, on_progress, total)
    except BaseException as exc:
        discard_store(out)  # ours: created above, never pre-existing
        _raise_one_line(out, exc, error)
        raise


def _raise_one_line(out: Path, exc: BaseException, error: type[DrivelabError]) -> None:
    """Raise the one-line error a user sees for ``exc`` (Ctrl-C, a full disk); else return."""
    if isinstance(exc, KeyboardInterrupt):
        raise Interrupted(f"the import into {out} was stopped; nothing was written "
                          "(the partial dataset was removed): run it again") from None
    if is_disk_full(exc):
        raise error(f"{out}: the disk is full (no space left on device); nothing was written "
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
