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

Crash safety: a worker writes an episode under `_staging/`, renames the finished group into
`episodes/` (an atomic directory rename) and only then writes the commit marker (`committed:
true` in the group's attrs, itself replaced atomically by the store). Readers only ever see
groups carrying the marker, so a killed recorder leaves at worst a leftover that `data verify`
reports, never half an episode; parallel workers each write their own group and never share an
array. The root attrs are written by the single collecting process only.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from drivelab.data.stats import SignalMoments, merge_moments
from drivelab.errors import DrivelabError
from drivelab.sim.base import SignalSpec

FORMAT_NAME = "drivelab.dataset"
FORMAT_VERSION = 1
EPISODES = "episodes"
STAGING = "_staging"
SPLITS = ("train", "val", "test")


class DatasetError(DrivelabError):
    """A dataset that is missing, not ours, too new, or damaged."""


@dataclass(frozen=True)
class DatasetMeta:
    """What every episode of a dataset shares: the simulator and the signal layout."""

    env_id: str
    fps: float
    frame_shape: tuple[int, int, int]
    telemetry: tuple[SignalSpec, ...]
    actions: tuple[SignalSpec, ...]
    chunk_frames: int = 32

    def to_attrs(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "fps": self.fps,
            "frame_shape": list(self.frame_shape),
            "telemetry": [s.to_dict() for s in self.telemetry],
            "actions": [s.to_dict() for s in self.actions],
            "chunk_frames": self.chunk_frames,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> DatasetMeta:
        return cls(
            env_id=attrs["env_id"],
            fps=float(attrs["fps"]),
            frame_shape=tuple(attrs["frame_shape"]),  # type: ignore[arg-type]
            telemetry=tuple(SignalSpec(**s) for s in attrs["telemetry"]),
            actions=tuple(SignalSpec(**s) for s in attrs["actions"]),
            chunk_frames=int(attrs.get("chunk_frames", 32)),
        )

    def signal_names(self) -> dict[str, list[str]]:
        return {
            "telemetry": [s.name for s in self.telemetry],
            "actions": [s.name for s in self.actions],
        }


@dataclass
class EpisodeRecord:
    """One finished episode in memory, as the recorder hands it to the store."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    telemetry: dict[str, np.ndarray]  # name -> float32 [T, size]
    actions: dict[str, np.ndarray]  # name -> float32 [T, size]
    reward: np.ndarray  # float32 [T]
    perturbed: np.ndarray  # bool [T]
    info: dict[str, Any] = field(default_factory=dict)  # seed, return, progress, ...

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class EpisodeInfo:
    """A committed episode as listed by the store (no array is read)."""

    index: int
    length: int
    attrs: dict[str, Any]

    @property
    def name(self) -> str:
        return episode_name(self.index)


def episode_name(index: int) -> str:
    return f"{index:06d}"


def _codec() -> BloscCodec:
    # lz4 + byte shuffle: decodes several GB/s, so random frame access in the loader stays cheap,
    # while CarRacing frames still shrink several-fold (large flat colour areas).
    return BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle)


class DatasetStore:
    """Read and append episodes of one dataset. Cheap to open; arrays are read lazily."""

    def __init__(self, path: Path, meta: DatasetMeta, attrs: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self._attrs = attrs

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: str | Path, meta: DatasetMeta) -> DatasetStore:
        """Create an empty dataset; refuses to touch anything that already exists."""
        path = Path(path)
        if path.exists():
            raise DatasetError(
                f"{path} already exists: pass --append to add episodes to it, "
                "or choose a new --out path (nothing was overwritten)"
            )
        attrs = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            **meta.to_attrs(),
            "splits": {"val": [], "test": []},
        }
        path.mkdir(parents=True)
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
        return cls(path, DatasetMeta.from_attrs(attrs), attrs)

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

    @staticmethod
    def _read_group_attrs(group_dir: Path) -> dict[str, Any] | None:
        try:
            return json.loads((group_dir / "zarr.json").read_text()).get("attributes", {})
        except (OSError, json.JSONDecodeError):
            return None

    def episodes(self) -> list[EpisodeInfo]:
        """Committed episodes, in index order. Safe while a recorder is writing."""
        found = []
        for index, d in self._episode_dirs():
            attrs = self._read_group_attrs(d)
            if attrs and attrs.get("committed") is True:
                found.append(EpisodeInfo(index=index, length=int(attrs["length"]), attrs=attrs))
        return found

    def leftovers(self) -> list[str]:
        """Paths (relative to the store) of episodes that were started but never committed."""
        out = []
        staging = self.path / STAGING
        if staging.is_dir():
            out += [f"{STAGING}/{p.name}" for p in sorted(staging.iterdir())]
        for _, d in self._episode_dirs():
            attrs = self._read_group_attrs(d)
            if not attrs or attrs.get("committed") is not True:
                out.append(f"{EPISODES}/{d.name}")
        return out

    def remove_leftovers(self) -> list[str]:
        removed = self.leftovers()
        for rel in removed:
            shutil.rmtree(self.path / rel, ignore_errors=True)
        return removed

    def next_index(self) -> int:
        """First episode index not used by any committed or leftover episode."""
        used = [i for i, _ in self._episode_dirs()]
        return max(used) + 1 if used else 0

    # ------------------------------------------------------------------ reading
    def episode(self, index: int) -> zarr.Group:
        d = self.path / EPISODES / episode_name(index)
        attrs = self._read_group_attrs(d) if d.is_dir() else None
        if not attrs or attrs.get("committed") is not True:
            raise DatasetError(f"episode {index} is not a committed episode of {self.path}")
        return zarr.open_group(str(d), mode="r", zarr_format=3)

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

    # ------------------------------------------------------------------ writing
    def write_episode(self, index: int, record: EpisodeRecord) -> EpisodeInfo:
        """Write and commit one episode (staging -> rename -> marker). Any process may call it."""
        self._check_record(record)
        name = episode_name(index)
        staging = self.path / STAGING / f"{name}-{uuid.uuid4().hex[:8]}"
        staging.parent.mkdir(exist_ok=True)
        moments = episode_moments(record)
        attrs = {
            **_jsonable(record.info),
            "index": index,
            "length": len(record),
            "moments": {k: m.to_dict() for k, m in moments.items()},
            "committed": False,
        }
        group = zarr.open_group(str(staging), mode="w-", zarr_format=3, attributes=attrs)
        t = len(record)
        h, w, c = self.meta.frame_shape
        chunk = max(1, min(self.meta.chunk_frames, t))
        group.create_array(
            "frames", data=record.frames, chunks=(chunk, h, w, c), compressors=[_codec()]
        )
        for kind, arrays in (("telemetry", record.telemetry), ("actions", record.actions)):
            sub = group.create_group(kind)
            for key, arr in arrays.items():
                sub.create_array(key, data=np.asarray(arr, np.float32), chunks=(max(t, 1), arr.shape[1]))
        group.create_array("reward", data=np.asarray(record.reward, np.float32), chunks=(max(t, 1),))
        group.create_array("perturbed", data=np.asarray(record.perturbed, bool), chunks=(max(t, 1),))
        final = self.path / EPISODES / name
        try:
            os.rename(staging, final)
        except OSError as exc:
            raise DatasetError(
                f"cannot commit episode {index}: {final} already exists (another recorder?)"
            ) from exc
        # The commit marker, written last: until it lands, readers skip this episode.
        committed = zarr.open_group(str(final), mode="r+", zarr_format=3)
        committed.attrs["committed"] = True
        return EpisodeInfo(index=index, length=len(record), attrs={**attrs, "committed": True})

    def _check_record(self, record: EpisodeRecord) -> None:
        t = len(record)
        if record.frames.dtype != np.uint8 or record.frames.shape[1:] != tuple(self.meta.frame_shape):
            raise DatasetError(
                f"episode frames are {record.frames.dtype}{list(record.frames.shape[1:])}, the "
                f"dataset holds uint8{list(self.meta.frame_shape)}: collect into a new --out"
            )
        for kind, specs, arrays in (
            ("telemetry", self.meta.telemetry, record.telemetry),
            ("actions", self.meta.actions, record.actions),
        ):
            want = {s.name: s.size for s in specs}
            if set(arrays) != set(want):
                raise DatasetError(
                    f"episode {kind} signals {sorted(arrays)} differ from the dataset's "
                    f"{sorted(want)}: collect into a new --out"
                )
            for key, arr in arrays.items():
                if arr.shape != (t, want[key]):
                    raise DatasetError(f"{kind}/{key} has shape {arr.shape}, expected {(t, want[key])}")
                if not np.all(np.isfinite(arr)):
                    raise DatasetError(
                        f"{kind}/{key} holds NaN or Inf values: the episode was not committed; "
                        "check the simulator adapter"
                    )

    def update_attrs(self, **changes: Any) -> None:
        """Change root attributes (splits, cached stats). Only the collecting process calls it."""
        root = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
        root.attrs.update(_jsonable(changes))
        self._attrs.update(_jsonable(changes))

    def assign_splits(self, val: Sequence[int], test: Sequence[int]) -> None:
        splits = self._attrs.get("splits", {"val": [], "test": []})
        new_val = sorted(set(splits.get("val", [])) | set(val))
        new_test = sorted(set(splits.get("test", [])) | set(test))
        self.update_attrs(splits={"val": new_val, "test": new_test})


def episode_moments(record: EpisodeRecord) -> dict[str, SignalMoments]:
    """Per-episode sufficient statistics, merged exactly across episodes later."""
    out = {"frames": SignalMoments.of_uint8(record.frames.reshape(-1, record.frames.shape[-1]))}
    for kind, arrays in (("telemetry", record.telemetry), ("actions", record.actions)):
        for key, arr in arrays.items():
            out[f"{kind}/{key}"] = SignalMoments.of(np.asarray(arr, np.float64))
    return out


def _jsonable(value: Any) -> Any:
    """Numpy scalars/arrays to plain JSON types (zarr attrs are JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
