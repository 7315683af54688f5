"""What an interrupted first write leaves: a folder with uncommitted ``_staging/`` groups and no
``zarr.json``. Recognised so that `data verify --remove-leftovers` can delete it and a rerun or
an `open` can say so, instead of calling it "not a drivelab dataset" that nothing may remove."""

from __future__ import annotations

import shutil
from pathlib import Path

from drivelab.data.locks import writer_lock
from drivelab.data.records import EPISODES, LOCK_FILE, STAGING, STAGING_NAME, DatasetError


def interrupted_skeleton(path: Path) -> list[str] | None:
    """What an interrupted first write left at ``path``, or None if it is anything else.

    A skeleton is a folder without ``zarr.json`` holding only what the store itself names: a
    ``_staging/`` of `write_episode` groups, the writer's lock file and an empty ``episodes/``
    (what a killed import or a full disk left before the fix that orders the cleanup after the
    writes). Nothing in it was ever committed, so `remove_skeleton` may delete it; any other
    entry, or a ``zarr.json``, means it is not ours to delete.
    """
    if path.is_symlink() or not path.is_dir() or (path / "zarr.json").exists():
        return None
    staging = path / STAGING
    entries = {p.name: p for p in path.iterdir()}
    if STAGING not in entries or not set(entries) <= {STAGING, LOCK_FILE, EPISODES}:
        return None
    if staging.is_symlink() or not staging.is_dir():
        return None
    groups = sorted(staging.iterdir())
    if not all(g.is_dir() and not g.is_symlink() and STAGING_NAME.match(g.name) for g in groups):
        return None
    lock = entries.get(LOCK_FILE)
    if lock is not None and (lock.is_symlink() or not lock.is_file()):
        return None
    episodes = entries.get(EPISODES)
    if episodes is not None and (episodes.is_symlink() or not episodes.is_dir() or any(episodes.iterdir())):
        return None
    return [f"{STAGING}/{g.name}" for g in groups]


def skeleton_hint(path: Path) -> str:
    """The one line for a skeleton met where a dataset (or a new path) was expected."""
    return (f"{path} is what an interrupted import or collect left (no zarr.json, only uncommitted "
            f"_staging/ groups; nothing was ever committed): `drivelab data verify --remove-leftovers "
            f"{path}` removes it")


def remove_skeleton(path: Path) -> list[str]:
    """Delete the interrupted write's skeleton at ``path`` (see `interrupted_skeleton`) whole.

    Holds the writer lock meanwhile (refused, nothing removed, while a writer holds it) and
    checks again under it, so only a folder that is still a skeleton is deleted.
    """
    with writer_lock(path, "run `drivelab data verify --remove-leftovers` again after it finishes "
                           "(nothing was removed)"):
        parts = interrupted_skeleton(path)
        if parts is None:
            raise DatasetError(f"{path} changed while being checked: nothing was removed")
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise DatasetError(f"could not remove {path} ({exc.strerror}); delete it by hand") from None
    return parts
