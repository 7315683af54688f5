"""What a drivelab dataset is made of, as plain records: its format, metadata, episodes, arrays.

The types every reader and writer of the store shares (`drivelab.data.store` keeps the Zarr
mechanics): the dataset's metadata as written in the root attrs, an episode as recorded and as
committed, the arrays every episode holds, and the errors a dataset raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.sim.base import SignalSpec

FORMAT_NAME = "drivelab.dataset"
FORMAT_VERSION = 1
EPISODES = "episodes"
STAGING = "_staging"
#: A staged episode group's name: its index and a random suffix (``000012-1a2b3c4d``).
STAGING_NAME = re.compile(r"^\d{6,}-[0-9a-f]{8}$")
SPLITS = ("train", "val", "test")
LOCK_FILE = ".collect.lock"


class DatasetError(DrivelabError):
    """A dataset that is missing, not ours, too new, or damaged."""


class DatasetBusy(DatasetError):
    """Another process (a `collect` or an import) holds the dataset's writer lock."""


@dataclass(frozen=True)
class DamagedGroup:
    """An episode group whose metadata cannot be read: reported, never deleted."""

    path: str  # relative to the store, e.g. "episodes/000001"
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class ArraySpec:
    """What one array of every episode must look like (checked from metadata alone)."""

    key: str  # e.g. "frames", "telemetry/speed"
    dtype: str  # zarr v3 data_type name
    trailing: tuple[int, ...]  # shape after the time axis


def expected_arrays(meta: DatasetMeta) -> list[ArraySpec]:
    """Every array an episode of a dataset with ``meta`` holds, with dtype and shape."""
    specs = [
        ArraySpec("frames", "uint8", tuple(meta.frame_shape)),
        ArraySpec("reward", "float32", ()),
        ArraySpec("perturbed", "bool", ()),
    ]
    specs += [ArraySpec(f"telemetry/{s.name}", "float32", (s.size,)) for s in meta.telemetry]
    specs += [ArraySpec(f"actions/{s.name}", "float32", (s.size,)) for s in meta.actions]
    return specs


@dataclass(frozen=True)
class DatasetMeta:
    """What every episode of a dataset shares: the simulator and the signal layout."""

    env_id: str
    fps: float
    frame_shape: tuple[int, int, int]
    telemetry: tuple[SignalSpec, ...]
    actions: tuple[SignalSpec, ...]
    chunk_frames: int = 32
    #: The env name ``make_env`` rebuilds this world from (``intersection:density=0.5``), as
    #: `collect` and `live` record it; ``None`` for imports and datasets made before it existed.
    env: str | None = None

    def to_attrs(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            **({"env": self.env} if self.env is not None else {}),
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
            env=attrs.get("env"),
        )

    def world_name(self) -> str | None:
        """The env name a run trained on this data drives in by default (``None``: no world
        drivelab can rebuild, e.g. an import: the verbs' own default applies)."""
        if self.env:
            return self.env
        if self.fps <= 0:
            return None
        from drivelab.sim.registry import env_name_of_id  # older datasets: their env id

        return env_name_of_id(self.env_id, self.frame_shape)

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
