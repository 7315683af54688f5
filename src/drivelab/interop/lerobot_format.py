"""LeRobot's dataset format v3.0, as `lerobot` 0.4 writes it (`lerobot/datasets/utils.py`,
`lerobot_dataset.py`), and how drivelab's signals map onto it.

Layout (one file per kind while a dataset stays small; LeRobot rolls files over at 100 MB of
data / 200 MB of video, and we read any number of chunk/file pairs)::

    meta/info.json                  codebase_version "v3.0", fps (int), features, totals, splits
    meta/stats.json                 per feature: min, max, mean, std, count, q01..q99
                                    (images: per channel, shape [3, 1, 1], in [0, 1])
    meta/tasks.parquet              pandas frame: index = task text, column task_index
    meta/episodes/chunk-000/file-000.parquet
                                    one row per episode: episode_index, tasks, length,
                                    data/{chunk,file}_index, dataset_{from,to}_index,
                                    videos/<key>/{chunk_index,file_index,from_timestamp,
                                    to_timestamp}, stats/<feature>/<stat>, meta/episodes/...
    data/chunk-000/file-000.parquet one row per frame: the non-video features
    videos/<key>/chunk-000/file-000.mp4
                                    every episode's frames back to back (episode k starts
                                    at from_timestamp)

drivelab -> LeRobot: frames -> ``observation.images.front``; telemetry (in the dataset's
order, vectors unrolled as ``purpose[0]``, ``purpose[1]``) -> ``observation.state``; actions
-> ``action``; reward -> ``next.reward``; the last frame of an episode -> ``next.done``;
perturbed -> ``perturbed``. What LeRobot has no field for (signal units and ranges, the
exact fps, the val/test episode lists, episode info) goes to ``meta/drivelab.json``, which
LeRobot ignores and our importer reads back, so a round trip loses nothing.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from drivelab.sim.base import SignalSpec

CODEBASE_VERSION = "v3.0"
READABLE_VERSIONS = ("v3.0",)
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
DRIVELAB_PATH = "meta/drivelab.json"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
IMAGE_KEY = "observation.images.front"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
_ELEMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)(?:\[(\d+)\])?$")


def element_names(specs: tuple[SignalSpec, ...]) -> list[str]:
    """One name per value: ``speed``, ``purpose[0]``, ``purpose[1]``."""
    return [s.name if s.size == 1 else f"{s.name}[{i}]" for s in specs for i in range(s.size)]


def specs_from_names(names: list[str] | None, size: int, fallback: str) -> tuple[SignalSpec, ...]:
    """Signals from LeRobot's per-value names (``x``, ``purpose[0]``, ``purpose[1]``...).

    Each plain name is one value; a run ``name[0]``, ``name[1]``... is one vector. Anything
    else (no names, a name that is not an identifier, a repeat, a gap) keeps the whole feature
    as one signal named ``fallback`` (e.g. ``action`` of size 6): better one honest vector than
    a guessed split. Dots become underscores (``x.pos`` -> ``x_pos``), as drivelab names are keys.
    """
    whole = (SignalSpec(fallback, size=size, description=f"LeRobot {fallback}"),)
    if not names or len(names) != size:
        return whole
    runs: list[list] = []  # [name, size, is_vector]
    for raw in names:
        m = _ELEMENT.match(str(raw))
        if m is None:
            return whole
        base, idx = m.group(1).replace(".", "_"), m.group(2)
        if idx is not None and runs and runs[-1][0] == base and runs[-1][2] and int(idx) == runs[-1][1]:
            runs[-1][1] += 1
        elif idx in (None, "0") and all(r[0] != base for r in runs):
            runs.append([base, 1, idx is not None])
        else:
            return whole
    return tuple(SignalSpec(name, size=n, description=f"LeRobot {fallback}") for name, n, _ in runs)


def feature_stats(values: np.ndarray, axis: int | tuple[int, ...] = 0, keepdims: bool = False) -> dict[str, Any]:
    """LeRobot's per-feature statistics (`compute_stats.get_feature_stats`) as JSON lists."""
    v = np.asarray(values, np.float64)
    out = {
        "min": np.min(v, axis=axis, keepdims=keepdims), "max": np.max(v, axis=axis, keepdims=keepdims),
        "mean": np.mean(v, axis=axis, keepdims=keepdims), "std": np.std(v, axis=axis, keepdims=keepdims),
    }
    for q in QUANTILES:
        out[f"q{int(q * 100):02d}"] = np.quantile(v, q, axis=axis, keepdims=keepdims)
    stats = {k: np.atleast_1d(x).tolist() for k, x in out.items()}
    stats["count"] = [int(v.shape[0])]
    return stats


def image_stats(frames: np.ndarray) -> dict[str, Any]:
    """Per-channel statistics of uint8 frames [T, H, W, 3] in [0, 1], shape [3, 1, 1] like LeRobot's."""
    sample = frames[:: max(1, len(frames) // 100)].astype(np.float64) / 255.0  # LeRobot samples ~100
    chw = sample.transpose(0, 3, 1, 2)
    stats = feature_stats(chw, axis=(0, 2, 3), keepdims=True)
    stats = {k: (np.asarray(v).reshape(3, 1, 1).tolist() if k != "count" else v) for k, v in stats.items()}
    stats["count"] = [len(sample)]
    return stats


def merge_stats(per_episode: list[dict[str, Any]], lengths: list[int]) -> dict[str, Any]:
    """Dataset statistics from episode statistics (LeRobot's `aggregate_stats`: count-weighted
    mean and pooled variance; quantiles as count-weighted means, which is what it does too)."""
    counts = np.array([s["count"][0] for s in per_episode], np.float64)
    w = counts / counts.sum()
    mean = sum(wi * np.asarray(s["mean"]) for wi, s in zip(w, per_episode, strict=True))
    var = sum(wi * (np.asarray(s["std"]) ** 2 + (np.asarray(s["mean"]) - mean) ** 2)
              for wi, s in zip(w, per_episode, strict=True))
    out: dict[str, Any] = {
        "min": np.min([s["min"] for s in per_episode], axis=0).tolist(),
        "max": np.max([s["max"] for s in per_episode], axis=0).tolist(),
        "mean": np.asarray(mean).tolist(), "std": np.sqrt(var).tolist(),
        "count": [int(counts.sum())],
    }
    for q in QUANTILES:
        key = f"q{int(q * 100):02d}"
        out[key] = np.asarray(sum(wi * np.asarray(s[key]) for wi, s in zip(w, per_episode, strict=True))).tolist()
    return out
