"""`drivelab data import lerobot`: a LeRobot v3.0 dataset folder -> a drivelab dataset.

What is read (see `drivelab.interop.lerobot_format`): ``meta/info.json`` (its
``codebase_version`` must be one we read; v2.x datasets are converted by LeRobot's own
``convert_dataset_v21_to_v30`` first), the episode table, the data table(s), and one camera's
frames (from the MP4 at each episode's ``from_timestamp``, or the PNG bytes of an ``image``
feature). ``observation.state`` becomes telemetry and ``action`` the actions, split into named
signals by the features' ``names`` (`lerobot_format.specs_from_names`). A dataset drivelab
exported carries ``meta/drivelab.json``; then the original signals, fps, splits and episode
info come back exactly.

Everything but the frames is read and checked before the store is created
(`drivelab.interop.lerobot_source`: the type of every field read from info.json,
meta/drivelab.json and the episode table, the ``video_path`` pattern, that every file it names
lies inside the dataset folder), and that one episode fits in memory. A frame that does
not decode or has another size than the feature says stops the import, and the half-written
store is removed (`drivelab.data.dataset_out`). Messages name the file and field, never repeat file content.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from drivelab.data.dataset_out import Progress, check_new_dataset, dataset_out
from drivelab.data.records import DatasetMeta, EpisodeRecord
from drivelab.interop import lerobot_format as fmt
from drivelab.interop.dataset_out import (
    InteropError,
    check_import_fits,
    check_split_counts,
    tail_splits,
)
from drivelab.interop.lerobot_source import LeRobotSource, camera_shape, read_source, video_path
from drivelab.interop.source_paths import clipped, inside, short_repr
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


def _meta(src: LeRobotSource) -> tuple[DatasetMeta, dict[str, list[int]] | None]:
    """drivelab's metadata: restored from meta/drivelab.json, else derived from the features."""
    info_path = src.root / fmt.INFO_PATH
    shape = camera_shape(src.info["features"], src.camera, info_path)
    if src.drivelab is not None:
        try:
            saved = DatasetMeta.from_attrs(src.drivelab["dataset_attrs"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InteropError(f"{src.root / fmt.DRIVELAB_PATH}: its dataset_attrs are damaged "
                               f"({type(exc).__name__}); delete the file to import from the LeRobot "
                               "features alone") from None
        if tuple(saved.frame_shape) != shape:
            raise InteropError(f"{src.root / fmt.DRIVELAB_PATH} says frames {list(saved.frame_shape)}, "
                               f"info.json {list(shape)}: the dataset is damaged")
        n = len(src.episodes)
        splits = src.drivelab.get("splits")
        if splits is not None and any(not 0 <= i < n for v in splits.values() for i in v):
            raise InteropError(f"{src.root / fmt.DRIVELAB_PATH}: its splits name episodes outside 0..{n - 1}")
        return saved, splits
    feats = src.info["features"]
    state = feats.get(fmt.STATE_KEY)
    telemetry = fmt.specs_from_names(state.get("names"), int(state["shape"][0]), "state") if state else ()
    act = feats[fmt.ACTION_KEY]
    actions = fmt.specs_from_names(act.get("names"), int(act["shape"][0]), "action")
    meta = DatasetMeta(env_id=f"lerobot:{src.info.get('robot_type') or 'unknown'}", fps=float(src.info["fps"]),
                       frame_shape=shape, telemetry=telemetry, actions=actions)  # type: ignore[arg-type]
    return meta, _range_splits(src.info.get("splits", {}), len(src.episodes), info_path)


def _range_splits(splits: Any, episodes: int, info_path: Path) -> dict[str, list[int]] | None:
    if not isinstance(splits, dict) or ("val" not in splits and "test" not in splits):
        return None
    out = {}
    for name in ("val", "test"):
        text = splits.get(name, "0:0")
        lo, _, hi = str(text).partition(":")
        if not (lo.isdigit() and hi.isdigit()) or not int(lo) <= int(hi) <= episodes:
            raise InteropError(f"{info_path}: split {name} is {short_repr(text, 40)}, not a range start:end "
                               f"of the {episodes} episodes: the dataset is damaged")
        out[name] = list(range(int(lo), int(hi)))
    return out


def import_lerobot(root: str | Path, out: str | Path, camera: str | None = None, val_episodes: int = 0,
                   test_episodes: int = 0, on_progress: Progress | None = None) -> LeRobotImport:
    """Import the LeRobot v3.0 dataset at ``root`` into a new drivelab dataset at ``out``."""
    root, out = Path(root), Path(out)
    check_new_dataset(out, InteropError)
    check_split_counts(val_episodes, test_episodes)
    src = read_source(root, camera)
    meta, splits = _meta(src)
    if splits is None or val_episodes or test_episodes:
        val, test = tail_splits(len(src.episodes), val_episodes, test_episodes)
        splits = {"val": val, "test": test}
    infos = (src.drivelab or {}).get("episode_info") or [{} for _ in src.episodes]
    if len(infos) != len(src.episodes):
        raise InteropError(f"{root / fmt.DRIVELAB_PATH}: episode_info lists {len(infos)} episodes, the dataset "
                           f"has {len(src.episodes)}: delete the file to import from the LeRobot features alone")
    storage = src.info["features"][src.camera]["dtype"]
    check_import_fits(out, meta.frame_shape, max(int(r["length"]) for r in src.episodes), _disk_lower_bound(src),
                      "import another camera (--camera) or shrink the frames in LeRobot first")
    with dataset_out(out, meta, InteropError, on_progress, len(src.episodes)) as ds:
        for row, info in zip(src.episodes, infos, strict=True):
            ds.add(_episode(src, row, meta, info))
        ds.store.assign_splits(val=splits.get("val", []), test=splits.get("test", []))
        ds.store.update_attrs(source="lerobot", source_path=str(root.resolve()), lerobot_camera=src.camera,
                              lerobot_codebase_version=src.info["codebase_version"])
        return LeRobotImport(out, ds.episodes, ds.frames, src.camera, storage, src.drivelab is not None)


def _episode(src: LeRobotSource, row: dict[str, Any], meta: DatasetMeta, info: dict[str, Any]) -> EpisodeRecord:
    lo = int(np.searchsorted(src.data["index"], int(row["dataset_from_index"])))
    n = int(row["length"])
    sl = slice(lo, lo + n)
    frames = _frames(src, row, sl, meta.frame_shape)
    where = f"{src.root / 'data'}: episode {row['episode_index']}"
    tele = _split_columns(src.data.get(fmt.STATE_KEY), sl, meta.telemetry, f"{where} {fmt.STATE_KEY}")
    actions = _split_columns(src.data[fmt.ACTION_KEY], sl, meta.actions, f"{where} {fmt.ACTION_KEY}")
    reward = src.data["next.reward"][sl] if "next.reward" in src.data else np.zeros(n)
    perturbed = src.data["perturbed"][sl] if "perturbed" in src.data else np.zeros(n, bool)
    keep = {k: v for k, v in info.items() if k not in ("index", "length", "moments", "committed", "chunks_complete")}
    tasks = row.get("tasks")
    try:
        reward = np.asarray(list(reward), np.float32).reshape(n)
        perturbed = np.asarray(list(perturbed), bool).reshape(n)
        tasks = [str(t) for t in tasks] if isinstance(tasks, list | tuple | np.ndarray) else []
    except (TypeError, ValueError):
        raise InteropError(f"{where}: its next.reward or perturbed values are not {n} numbers: the dataset is "
                           "damaged") from None
    if not np.all(np.isfinite(reward)):
        raise InteropError(f"{where}: next.reward holds a NaN or Inf value: fix or drop that episode in LeRobot")
    return EpisodeRecord(frames=frames, telemetry=tele, actions=actions, reward=reward, perturbed=perturbed,
                         info={**keep, "lerobot_episode_index": int(row["episode_index"]), "tasks": tasks})


def _split_columns(values: np.ndarray | None, sl: slice, specs: tuple[SignalSpec, ...],
                   where: str) -> dict[str, np.ndarray]:
    """One feature's column cut into the signals' arrays; a cell that is not a finite number, or a
    vector of another length than the signals add up to, is named."""
    if not specs:
        return {}
    assert values is not None
    width = sum(s.size for s in specs)
    try:
        block = np.asarray(list(values[sl]), np.float32).reshape(sl.stop - sl.start, width)
    except (TypeError, ValueError):
        raise InteropError(f"{where}: the values are not vectors of {width} numbers: the dataset is damaged") from None
    bad = np.argwhere(~np.isfinite(block))
    if len(bad):
        raise InteropError(f"{where}: frame {int(bad[0][0])} holds a NaN or Inf value "
                           f"(element {int(bad[0][1])}): fix or drop that episode in LeRobot (nothing was written)")
    out, start = {}, 0
    for s in specs:
        out[s.name] = block[:, start:start + s.size]
        start += s.size
    return out


def _frames(src: LeRobotSource, row: dict[str, Any], sl: slice, shape: tuple[int, ...]) -> np.ndarray:
    n = sl.stop - sl.start
    if src.info["features"][src.camera]["dtype"] == "video":
        key = src.camera
        frames = read_video(video_path(src, row), float(row[f"videos/{key}/from_timestamp"]), n, float(src.info["fps"]))
    else:
        where = f"{src.root / 'data'}: episode {row['episode_index']}"
        frames = np.stack([_png(cell, src.root, f"{where} frame {t}", shape)
                           for t, cell in enumerate(src.data[src.camera][sl])])
    if frames.shape[1:] != tuple(shape):
        raise InteropError(
            f"mismatched frame sizes: episode {row['episode_index']} has {clipped(src.camera)} frames "
            f"{list(frames.shape[1:])}, info.json says {list(shape)} (nothing was written)"
        )
    return frames


def _disk_lower_bound(src: LeRobotSource) -> int:
    """Bytes the import needs at least: the (compressed) frames' own files; stored lossless
    (Blosc lz4), the frames take more than the AV1 video or the PNG bytes they come from."""
    if src.info["features"][src.camera]["dtype"] == "video":
        files = {video_path(src, row) for row in src.episodes}
    else:
        files = set((src.root / "data").glob("chunk-*/file-*.parquet"))
    return sum(f.stat().st_size for f in files if f.is_file())


def _png(cell: Any, root: Path, where: str, shape: tuple[int, ...]) -> np.ndarray:
    """One image cell (PNG bytes, or a path inside the dataset) decoded, its size checked from the
    header first: an image larger than the feature says is refused before it is decoded."""
    if not isinstance(cell, dict):
        raise InteropError(f"{where}: the image cell is not a {{bytes, path}} struct: the dataset is damaged")
    data = cell.get("bytes")
    source = io.BytesIO(data) if data else inside(root, cell.get("path"), where)
    try:
        with Image.open(source) as img:
            if (img.size[1], img.size[0]) != tuple(shape[:2]):
                raise InteropError(
                    f"mismatched frame sizes: {where} has a {img.size[0]}x{img.size[1]} image (width x height), "
                    f"info.json says {list(shape)} (nothing was written)")
            return np.asarray(img.convert("RGB"), np.uint8)
    except InteropError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InteropError(f"{where}: the image cannot be decoded ({type(exc).__name__}): the dataset is damaged") from None
