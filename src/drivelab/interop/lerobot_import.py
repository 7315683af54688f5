"""`drivelab data import lerobot`: a LeRobot v3.0 dataset folder -> a drivelab dataset.

What is read (see `drivelab.interop.lerobot_format`): ``meta/info.json`` (its
``codebase_version`` must be one we read; v2.x datasets are converted by LeRobot's own
``convert_dataset_v21_to_v30`` first), the episode table, the data table(s), and one camera's
frames (from the MP4 at each episode's ``from_timestamp``, or the PNG bytes of an ``image``
feature). ``observation.state`` becomes telemetry and ``action`` the actions, split into named
signals by the features' ``names`` (`lerobot_format.specs_from_names`). A dataset drivelab
exported carries ``meta/drivelab.json``; then the original signals, fps, splits and episode
info come back exactly.

Everything but the frames is read and checked before the store is created; a frame that does
not decode or has another size than the feature says stops the import, and the half-written
store is removed (`dataset_out`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from drivelab.data.records import DatasetMeta, EpisodeRecord
from drivelab.interop import lerobot_format as fmt
from drivelab.interop.dataset_out import (
    InteropError,
    check_new_dataset,
    check_split_counts,
    dataset_out,
    tail_splits,
)
from drivelab.interop.deps import pyarrow_parquet
from drivelab.interop.video import read_video
from drivelab.sim.base import SignalSpec


@dataclass
class LeRobotImport:
    path: Path
    episodes: int
    frames: int
    camera: str
    storage: str
    exact: bool  # meta/drivelab.json restored drivelab's own signal specs


@dataclass
class _Source:
    """A LeRobot dataset as read before any frame: info, episode rows, data columns."""

    root: Path
    info: dict[str, Any]
    episodes: list[dict[str, Any]]
    data: dict[str, np.ndarray]  # column -> values in global frame order (by `index`)
    camera: str
    drivelab: dict[str, Any] | None


def read_source(root: Path, camera: str | None) -> _Source:
    """Open ``root`` as a LeRobot v3 dataset and read everything but the frames."""
    info_path = root / fmt.INFO_PATH
    if not root.is_dir() or not info_path.is_file():
        raise InteropError(f"{root} is not a LeRobot dataset: expected {info_path} (a v3.0 dataset folder)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InteropError(f"{info_path} is not JSON ({exc}): the dataset is damaged") from None
    version = info.get("codebase_version")
    if version not in fmt.READABLE_VERSIONS:
        raise InteropError(
            f"{info_path}: codebase_version {version!r} is not one drivelab reads "
            f"({', '.join(fmt.READABLE_VERSIONS)}); convert it with LeRobot's convert_dataset_v21_to_v30 first"
        )
    features = info.get("features", {})
    cameras = [k for k, f in features.items() if f.get("dtype") in ("video", "image")]
    if not cameras:
        raise InteropError(f"{info_path}: the dataset has no camera feature (dtype video or image)")
    if camera is None:
        camera = fmt.IMAGE_KEY if fmt.IMAGE_KEY in cameras else cameras[0]
    elif camera not in cameras:
        raise InteropError(f"--camera {camera}: the dataset's cameras are {', '.join(cameras)}")
    if fmt.ACTION_KEY not in features:
        raise InteropError(f"{info_path}: the dataset has no `action` feature: nothing to learn from")
    pq = pyarrow_parquet()
    episodes = _read_tables(pq, root / fmt.EPISODES_DIR, None)
    columns = [k for k, f in features.items() if f.get("dtype") != "video" and (f.get("dtype") != "image" or k == camera)]
    data = _read_tables(pq, root / "data", columns)
    extra = root / fmt.DRIVELAB_PATH
    source = _Source(root, info, _rows(episodes), {}, camera, json.loads(extra.read_text()) if extra.is_file() else None)
    order = np.argsort(np.asarray(data["index"]))
    source.data = {k: _column(v, order) for k, v in data.items()}
    _check_episodes(source)
    return source


def _read_tables(pq: Any, folder: Path, columns: list[str] | None) -> dict[str, list[Any]]:
    """Every ``chunk-*/file-*.parquet`` under ``folder``, concatenated, as python columns."""
    files = sorted(folder.glob("chunk-*/file-*.parquet"))
    if not files:
        raise InteropError(f"{folder} holds no chunk-*/file-*.parquet: the dataset is incomplete")
    out: dict[str, list[Any]] = {}
    for f in files:
        try:
            table = pq.read_table(str(f), columns=[c for c in columns if c in pq.read_schema(str(f)).names] if columns else None)
        except OSError as exc:
            raise InteropError(f"{f}: not a readable Parquet file ({exc})") from None
        for name in table.column_names:
            out.setdefault(name, []).extend(table.column(name).to_pylist())
    if columns:
        missing = [c for c in columns if c not in out]
        if missing:
            raise InteropError(f"{folder}: the data table lacks the column(s) {', '.join(missing)} that info.json lists")
    return out


def _rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = [k for k in columns if not k.startswith("stats/")]
    rows = [dict(zip(names, values, strict=True)) for values in zip(*(columns[k] for k in names), strict=True)]
    return sorted(rows, key=lambda r: r["episode_index"])


def _column(values: list[Any], order: np.ndarray) -> np.ndarray:
    if values and isinstance(values[0], dict):  # an image struct {bytes, path}
        return np.array([values[i] for i in order], dtype=object)
    return np.asarray(values)[order]


def _check_episodes(src: _Source) -> None:
    index = src.data["index"]
    for row in src.episodes:
        lo, hi = int(row["dataset_from_index"]), int(row["dataset_to_index"])
        got = np.searchsorted(index, hi) - np.searchsorted(index, lo)
        if hi - lo != row["length"] or got != row["length"]:
            raise InteropError(
                f"{src.root}: episode {row['episode_index']} has length {row['length']} but {got} data rows "
                f"in [{lo}, {hi}): the dataset is damaged"
            )
        if src.info["features"][src.camera]["dtype"] == "video":
            video = _video_path(src, row)
            if not video.is_file():
                raise InteropError(f"{video} is missing (episode {row['episode_index']} needs it)")


def _video_path(src: _Source, row: dict[str, Any]) -> Path:
    key = src.camera
    rel = src.info.get("video_path") or fmt.VIDEO_PATH
    return src.root / rel.format(video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                                 file_index=int(row[f"videos/{key}/file_index"]))


def _meta(src: _Source) -> tuple[DatasetMeta, dict[str, list[int]] | None]:
    """drivelab's metadata: restored from meta/drivelab.json, else derived from the features."""
    shape = tuple(int(x) for x in src.info["features"][src.camera]["shape"])
    if len(shape) != 3 or shape[2] != 3:
        raise InteropError(f"{src.camera} has shape {list(shape)}: drivelab stores RGB frames [H, W, 3]")
    if src.drivelab is not None:
        saved = DatasetMeta.from_attrs(src.drivelab["dataset_attrs"])
        return saved, src.drivelab.get("splits")
    feats = src.info["features"]
    state = feats.get(fmt.STATE_KEY)
    telemetry = fmt.specs_from_names(state.get("names"), int(state["shape"][0]), "state") if state else ()
    act = feats[fmt.ACTION_KEY]
    actions = fmt.specs_from_names(act.get("names"), int(act["shape"][0]), "action")
    meta = DatasetMeta(env_id=f"lerobot:{src.info.get('robot_type') or 'unknown'}", fps=float(src.info["fps"]),
                       frame_shape=shape, telemetry=telemetry, actions=actions)  # type: ignore[arg-type]
    return meta, _range_splits(src.info.get("splits", {}))


def _range_splits(splits: dict[str, str]) -> dict[str, list[int]] | None:
    if "val" not in splits and "test" not in splits:
        return None
    out = {}
    for name in ("val", "test"):
        lo, _, hi = splits.get(name, "0:0").partition(":")
        out[name] = list(range(int(lo), int(hi)))
    return out


def import_lerobot(root: str | Path, out: str | Path, camera: str | None = None, val_episodes: int = 0,
                   test_episodes: int = 0) -> LeRobotImport:
    """Import the LeRobot v3.0 dataset at ``root`` into a new drivelab dataset at ``out``."""
    root, out = Path(root), Path(out)
    check_new_dataset(out)
    check_split_counts(val_episodes, test_episodes)
    src = read_source(root, camera)
    meta, splits = _meta(src)
    if splits is None or val_episodes or test_episodes:
        val, test = tail_splits(len(src.episodes), val_episodes, test_episodes)
        splits = {"val": val, "test": test}
    infos = (src.drivelab or {}).get("episode_info") or [{} for _ in src.episodes]
    storage = src.info["features"][src.camera]["dtype"]
    with dataset_out(out, meta) as ds:
        for row, info in zip(src.episodes, infos, strict=True):
            ds.add(_episode(src, row, meta, info))
        ds.store.assign_splits(val=splits.get("val", []), test=splits.get("test", []))
        ds.store.update_attrs(source="lerobot", source_path=str(root.resolve()), lerobot_camera=src.camera,
                              lerobot_codebase_version=src.info["codebase_version"])
        return LeRobotImport(out, ds.episodes, ds.frames, src.camera, storage, src.drivelab is not None)


def _episode(src: _Source, row: dict[str, Any], meta: DatasetMeta, info: dict[str, Any]) -> EpisodeRecord:
    lo = int(np.searchsorted(src.data["index"], int(row["dataset_from_index"])))
    n = int(row["length"])
    sl = slice(lo, lo + n)
    frames = _frames(src, row, sl, meta.frame_shape)
    tele = _split_columns(src.data.get(fmt.STATE_KEY), sl, meta.telemetry)
    actions = _split_columns(src.data[fmt.ACTION_KEY], sl, meta.actions)
    reward = src.data["next.reward"][sl] if "next.reward" in src.data else np.zeros(n)
    perturbed = src.data["perturbed"][sl] if "perturbed" in src.data else np.zeros(n, bool)
    keep = {k: v for k, v in info.items() if k not in ("index", "length", "moments", "committed", "chunks_complete")}
    return EpisodeRecord(frames=frames, telemetry=tele, actions=actions,
                         reward=np.asarray(reward, np.float32).reshape(n), perturbed=np.asarray(perturbed, bool).reshape(n),
                         info={**keep, "lerobot_episode_index": int(row["episode_index"]), "tasks": list(row.get("tasks") or [])})


def _split_columns(values: np.ndarray | None, sl: slice, specs: tuple[SignalSpec, ...]) -> dict[str, np.ndarray]:
    if not specs:
        return {}
    assert values is not None
    block = np.asarray(values[sl], np.float32).reshape(sl.stop - sl.start, -1)
    out, start = {}, 0
    for s in specs:
        out[s.name] = block[:, start:start + s.size]
        start += s.size
    return out


def _frames(src: _Source, row: dict[str, Any], sl: slice, shape: tuple[int, ...]) -> np.ndarray:
    n = sl.stop - sl.start
    if src.info["features"][src.camera]["dtype"] == "video":
        key = src.camera
        frames = read_video(_video_path(src, row), float(row[f"videos/{key}/from_timestamp"]), n, float(src.info["fps"]))
    else:
        frames = np.stack([_png(cell, src.root) for cell in src.data[src.camera][sl]])
    if frames.shape[1:] != tuple(shape):
        raise InteropError(
            f"mismatched frame sizes: episode {row['episode_index']} has {src.camera} frames "
            f"{list(frames.shape[1:])}, info.json says {list(shape)} (nothing was written)"
        )
    return frames


def _png(cell: dict[str, Any], root: Path) -> np.ndarray:
    data = cell.get("bytes")
    with Image.open(io.BytesIO(data) if data else root / str(cell.get("path"))) as img:
        return np.asarray(img.convert("RGB"), np.uint8)
