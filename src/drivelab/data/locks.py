"""The dataset's writer lock: one process at a time writes a dataset (collect, import).

A ``flock`` on ``<dataset>/.collect.lock``: held for the whole of a write, released by the kernel
when the writer dies, so a killed collect never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from drivelab.data.records import LOCK_FILE, DatasetBusy, DatasetError


@contextmanager
def writer_lock(path: Path, busy: str = "wait for it to finish") -> Iterator[None]:
    """One writer per dataset (collect, import, leftover removal): a second one fails at once.

    An fcntl flock on ``path/.collect.lock``; it belongs to an open file description, so it goes
    away with the process however it dies, and a second open in the same process conflicts too.
    ``busy`` ends the one-line refusal (what the user should do instead).
    """
    try:
        fd = os.open(path / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as exc:
        raise DatasetError(
            f"cannot take the writer lock {path / LOCK_FILE} ({exc.strerror}): check that "
            f"{path} is writable"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetBusy(
                f"another drivelab process (`collect` or `data import`) is writing to {path}: {busy}"
            ) from None
        yield
    finally:
        os.close(fd)


def writer_active(path: Path) -> bool:
    """Whether some process holds the writer lock right now (probed, never held)."""
    lock = path / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody ever collected here, nobody is collecting now
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def check_creatable(path: Path) -> None:
    """Refuse, in one line and before anything is made, a dataset folder that cannot be created.

    ``path`` must not exist, and its nearest existing ancestor must be a writable folder (a plain
    file there would otherwise surface as `NotADirectoryError` halfway through a verb).
    """
    if path.exists() or path.is_symlink():
        raise DatasetError(
            f"{path} already exists: pass --append to add episodes to it, "
            "or choose a new --out path (nothing was overwritten)"
        )
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DatasetError(
            f"cannot create {path}: {parent} is a file, not a folder; choose another --out path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DatasetError(
            f"cannot create {path}: {parent} is not writable; choose another --out path"
        )
