"""The drivelab dataset: a Zarr v3 store of committed episodes.

Layout (see DESIGN.md)::

    root/zarr.json                 group; attrs: format, version, env, fps, frame shape,
                                   signal specs, splits, cached statistics
    root/episodes/000042/          one group per episode; attrs: episode info + `committed`
        frames                     uint8 [T, H, W, 3], chunked along T
        telemetry/<signal>         float32 [T, size]  (what the car knew *before* acting)
        actions/<action>           float32 [T, size]  (the expert's intended action = label)
        perturbed                  bool [T]            (a noisy action was executed instead)
        reward                     float32 [T]
    root/_staging/                 episodes being written (never read)
    root/.collect.lock             flock held by the one process writing (collect, import)

Writing and committing an episode (staging -> rename -> marker, the crash-safety protocol) is
`drivelab.data.episode_writer`; checking an episode's array metadata is
`drivelab.data.array_checks`. The root attrs are written by the process holding the writer lock
only, re-read from disk before every change.

What `data verify` may delete is decided here, strictly (`leftovers`): a `_staging/` entry the
store named itself, or an episode group whose readable attrs say ``committed: false`` (a
recorder killed between the rename and the marker: all arrays are there, but nothing ever
promised them to a reader) — and only while no process holds the writer lock, since either is
normal while a recorder works. An episode group whose own ``zarr.json`` is missing or cannot be
parsed is *damaged* (`damaged`): it may well be a committed episode whose metadata got hurt, so
it is reported as a problem and never deleted.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from drivelab.data.locks import check_creatable, writer_active, writer_lock
from drivelab.data.records import (
    EPISODES,
    FORMAT_NAME,
    FORMAT_VERSION,
    SPLITS,
    STAGING,
    STAGING_NAME,
    DamagedGroup,
    DatasetError,
    DatasetMeta,
    EpisodeInfo,
    episode_name,
)
from drivelab.data.skeleton import interrupted_skeleton, skeleton_hint
from drivelab.data.stats import SignalMoments, merge_moments

#: `episode_writer.write_episode` names its staging groups ``<episode name>-<8 hex digits>``.


class DatasetStore:
    """Open, list and read the episodes of one dataset, and change its root attrs. Cheap to open;
    arrays are read lazily (episodes are written by `episode_writer.write_episode`)."""

    def __init__(self, path: Path, meta: DatasetMeta, attrs: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self._attrs = attrs

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: str | Path, meta: DatasetMeta) -> DatasetStore:
        """Create an empty dataset; refuses to touch anything that already exists."""
        path = Path(path)
        check_creatable(path)
        attrs = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            **meta.to_attrs(),
            "splits": {"val": [], "test": []},
        }
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise DatasetError(f"cannot create {path} ({exc.strerror}): choose another --out path") from None
        zarr.open_group(str(path), mode="w-", zarr_format=3, attributes=attrs)
        zarr.open_group(str(path / EPISODES), mode="w-", zarr_format=3)
        return cls(path, meta, attrs)

    @classmethod
    def open(cls, path: str | Path) -> DatasetStore:
        """Open an existing dataset, checking that it is one and that we can read its format."""
        path = Path(path)
        meta_file = path / "zarr.json"
        if not path.exists():
            raise DatasetError(f"{path} does not exist: collect one with `drivelab collect --out {path}`")
        if not meta_file.is_file():
            if interrupted_skeleton(path) is not None:
                raise DatasetError(skeleton_hint(path))
            raise DatasetError(
                f"{path} is not a drivelab dataset (no zarr.json): point to a folder made by "
                "`drivelab collect`"
            )
        try:
            root = json.loads(meta_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}/zarr.json is unreadable ({exc}): the store is damaged") from exc
        attrs = root.get("attributes", {})
        if attrs.get("format") != FORMAT_NAME:
            raise DatasetError(
                f"{path} is a Zarr store but not a drivelab dataset (format "
                f"{attrs.get('format')!r}): point to a folder made by `drivelab collect`"
            )
        version = attrs.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise DatasetError(
                f"{path} uses dataset format version {version}, newer than this drivelab "
                f"reads ({FORMAT_VERSION}): upgrade drivelab"
            )
        if attrs.get("edit_state") == "writing":  # `data edit` renames it into place only when done
            raise DatasetError(f"{path} is an unfinished `drivelab data edit` (killed while writing): delete it "
                               "and run the edit again")
        try:
            meta = DatasetMeta.from_attrs(attrs)
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{path}/zarr.json holds damaged dataset attributes ({type(exc).__name__}: {exc}): "
                "the store is damaged; restore its zarr.json from a backup"
            ) from None
        splits = attrs.get("splits", {})
        if not isinstance(splits, dict) or not all(
            isinstance(v, list) and all(isinstance(i, int) for i in v) for v in splits.values()
        ):
            raise DatasetError(
                f"{path}/zarr.json: its `splits` attribute is damaged ({splits!r:.80}): restore "
                "its zarr.json from a backup"
            )
        return cls(path, meta, attrs)

    # ------------------------------------------------------------------ listing
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._attrs)

    def _episode_dirs(self) -> Iterator[tuple[int, Path]]:
        root = self.path / EPISODES
        if not root.is_dir():
            return
        for child in sorted(root.iterdir()):
            if child.is_dir() and child.name.isdigit():
                yield int(child.name), child

    def scan(self) -> tuple[list[EpisodeInfo], list[str], list[DamagedGroup]]:
        """Every episode group, sorted into committed, uncommitted and damaged.

        Uncommitted means readable attrs with ``committed: false`` — the state `write_episode`
        creates, and the one a recorder killed between the rename and the marker leaves.
        Anything else that cannot be listed as a committed episode is damaged.
        """
        committed: list[EpisodeInfo] = []
        uncommitted: list[str] = []
        damaged: list[DamagedGroup] = []
        for index, d in self._episode_dirs():
            rel = f"{EPISODES}/{d.name}"
            attrs, why = group_attrs(d)
            if attrs is None:
                damaged.append(DamagedGroup(rel, why or "unreadable"))
                continue
            marker = attrs.get("committed")
            if marker is False:
                uncommitted.append(rel)
            elif marker is not True:
                damaged.append(DamagedGroup(rel, "its attrs carry no commit marker"))
            elif not isinstance(attrs.get("length"), int) or attrs["length"] < 0:
                damaged.append(DamagedGroup(rel, "committed, but its `length` attribute is missing"))
            else:
                committed.append(EpisodeInfo(index=index, length=int(attrs["length"]), attrs=attrs))
        return committed, uncommitted, damaged

    def episodes(self) -> list[EpisodeInfo]:
        """Committed episodes, in index order. Safe while a recorder is writing.

        Damaged groups are not episodes one can read; `damaged` lists them, and `verify`,
        `data info` and the loader report them rather than carry on without them.
        """
        return self.scan()[0]

    def damaged(self) -> list[DamagedGroup]:
        """Episode groups whose metadata cannot be read (possibly committed): never deleted."""
        return self.scan()[2]

    def writer_active(self) -> bool:
        """Whether a `collect` or import holds the dataset's writer lock right now."""
        return writer_active(self.path)

    def writer_lock(self, busy: str = "wait for it to finish") -> AbstractContextManager[None]:
        """The dataset's writer lock (a context manager); see `writer_lock`."""
        return writer_lock(self.path, busy)

    def foreign_staging(self) -> list[str]:
        """Entries under `_staging/` the store did not name: not ours to delete."""
        staging = self.path / STAGING
        if not staging.is_dir():
            return []
        return [f"{STAGING}/{p.name}" for p in sorted(staging.iterdir())
                if not (p.is_dir() and STAGING_NAME.match(p.name))]

    def leftovers(self) -> list[str]:
        """Paths (relative to the store) of episodes started by the store but never committed.

        Staging groups named by `write_episode`, and episode groups whose readable attrs say
        ``committed: false``. While `writer_active()` these are a recorder's work in progress.
        Damaged groups (unreadable metadata) are never leftovers.
        """
        out = []
        staging = self.path / STAGING
        if staging.is_dir():
            out += [f"{STAGING}/{p.name}" for p in sorted(staging.iterdir())
                    if p.is_dir() and STAGING_NAME.match(p.name)]
        out += self.scan()[1]
        return out

    def remove_leftovers(self) -> list[str]:
        """Delete the leftovers, holding the writer lock so no recorder is working meanwhile.

        Refuses (`DatasetBusy`, nothing removed) while a `collect` or import holds the lock:
        its staging group and its just-renamed episode look exactly like leftovers.
        """
        with self.writer_lock(
            "run `drivelab data verify --remove-leftovers` again after it finishes (nothing was removed)"
        ):
            removed = self.leftovers()
            for rel in removed:
                try:
                    shutil.rmtree(self.path / rel)
                except OSError as exc:
                    raise DatasetError(
                        f"could not remove leftover {self.path / rel} ({exc.strerror}); delete it by hand"
                    ) from None
        return removed

    def next_index(self) -> int:
        """First episode index not used by any committed or leftover episode."""
        used = [i for i, _ in self._episode_dirs()]
        return max(used) + 1 if used else 0

    # ------------------------------------------------------------------ reading
    def episode(self, index: int) -> zarr.Group:
        d = self.path / EPISODES / episode_name(index)
        attrs = group_attrs(d)[0] if d.is_dir() else None
        if not attrs or attrs.get("committed") is not True:
            raise DatasetError(f"episode {index} is not a committed episode of {self.path}")
        return zarr.open_group(str(d), mode="r", zarr_format=3)

    def read_array(self, index: int, key: str) -> np.ndarray:
        """One whole array of a committed episode; a damaged chunk becomes one `DatasetError`.

        The message names the episode and the array and points to `drivelab data verify`,
        instead of Blosc's "error during blosc decompression" with no hint of where.
        """
        name = episode_name(index)
        try:
            return np.asarray(zarr.open_array(str(self.path / EPISODES / name / key), mode="r")[:])
        except MemoryError:
            raise
        except Exception as exc:
            detail = (str(exc).strip().splitlines() or [""])[0][:160]
            raise DatasetError(
                f"{self.path}: episode {name} array {key} cannot be read ({type(exc).__name__}"
                f"{': ' + detail if detail else ''}): run `drivelab data verify {self.path}`"
            ) from None

    def split_of(self, index: int) -> str:
        splits = self._attrs.get("splits", {})
        for name in ("val", "test"):
            if index in splits.get(name, []):
                return name
        return "train"

    def split_episodes(self, split: str) -> list[EpisodeInfo]:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return [e for e in self.episodes() if self.split_of(e.index) == split]

    def moments(self, episodes: Sequence[EpisodeInfo] | None = None) -> dict[str, SignalMoments]:
        """Exact statistics of frames and signals, merged from the per-episode moments."""
        eps = self.episodes() if episodes is None else episodes
        per_key: dict[str, list[SignalMoments]] = {}
        for e in eps:
            for key, raw in e.attrs.get("moments", {}).items():
                per_key.setdefault(key, []).append(SignalMoments.from_dict(raw))
        return {k: merge_moments(v) for k, v in per_key.items()}

    def update_attrs(self, **changes: Any) -> None:
        """Change root attributes (splits, cached stats); call it holding the writer lock.

        The root attrs are re-read from disk and the changed keys merged in, so what another
        writer changed since this store was opened (its splits, say) is kept, not overwritten
        from this object's copy. The copy is refreshed from what was written.
        """
        root = zarr.open_group(str(self.path), mode="r+", zarr_format=3)  # reads zarr.json now
        root.attrs.update(jsonable(changes))
        self._attrs = dict(root.attrs)

    def reload_attrs(self) -> dict[str, Any]:
        """The root attrs as they are on disk now (another writer may have changed them)."""
        self._attrs = dict(zarr.open_group(str(self.path), mode="r", zarr_format=3).attrs)
        return self.attrs

    def assign_splits(self, val: Sequence[int], test: Sequence[int]) -> None:
        """Add episodes to val / test; call it holding the writer lock.

        The current splits are read from disk, not from this object's copy: a second appender
        that opened the store before the first one finished would otherwise write back its stale
        splits and silently move the first one's val/test episodes into train.
        """
        splits = self.reload_attrs().get("splits", {"val": [], "test": []})
        new_val = sorted(set(splits.get("val", [])) | set(val))
        new_test = sorted(set(splits.get("test", [])) | set(test))
        self.update_attrs(splits={"val": new_val, "test": new_test})


def group_attrs(group_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(attrs, None) for a readable group, else (None, why it cannot be read)."""
    meta = group_dir / "zarr.json"
    try:
        raw = json.loads(meta.read_text())
    except FileNotFoundError:
        return None, "its zarr.json is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"its zarr.json is unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(raw, dict) or raw.get("node_type") != "group":
        return None, "its zarr.json is not a Zarr group's metadata"
    attrs = raw.get("attributes", {})
    if not isinstance(attrs, dict):
        return None, "its zarr.json attributes are not a mapping"
    return attrs, None


def jsonable(value: Any) -> Any:
    """Numpy scalars/arrays to plain JSON types (zarr attrs are JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value

