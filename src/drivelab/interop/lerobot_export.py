"""`drivelab data export lerobot`: a drivelab dataset -> a LeRobot v3.0 dataset folder.

The folder is built under a hidden temporary name beside ``--out`` and renamed into place at
the end (one atomic directory rename), so a failed or interrupted export leaves no half dataset
that LeRobot would later trip over (nor the parent folders it created); a full disk and Ctrl-C
each end as one line. Every write here runs on this thread (pyarrow, PyAV), so once the
exception arrives nothing writes there any more and the removal is final. Frames go to an MP4 per camera (AV1 by default, like
LeRobot; lossy) or, with ``images=True``, into the data table as PNG (lossless, so a round trip
is bit-exact). See `drivelab.interop.lerobot_format` for the layout and the signal mapping.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from drivelab.data.dataset_out import Progress, is_disk_full
from drivelab.data.episode_writer import discard_store
from drivelab.data.store import DatasetStore
from drivelab.errors import Interrupted
from drivelab.interop import lerobot_format as fmt
from drivelab.interop.dataset_out import InteropError
from drivelab.interop.deps import pyarrow_parquet
from drivelab.interop.video import VideoWriter
from drivelab.outputs import check_output_dir, write_text


@dataclass
class ExportReport:
    path: Path
    episodes: int = 0
    frames: int = 0
    storage: str = "video"
    features: list[str] = field(default_factory=list)


def check_export_target(out: Path) -> None:
    """Refuse an existing ``--out`` (or one inside a dataset) before any frame is read."""
    check_output_dir(out, "--out")
    if out.exists() or out.is_symlink():
        raise InteropError(f"{out} already exists: choose a new --out (nothing was overwritten)")


def export_lerobot(dataset: str | Path, out: str | Path, images: bool = False, codec: str = "av1",
                   task: str | None = None, on_progress: Progress | None = None) -> ExportReport:
    """Write the dataset at ``dataset`` as a LeRobot v3.0 dataset at ``out`` (a new folder)."""
    out = Path(out)
    store = DatasetStore.open(dataset)
    check_export_target(out)
    meta = store.meta
    if meta.fps <= 0 or not meta.actions:
        raise InteropError(f"{dataset} has no time axis (fps {meta.fps:g}): only driving datasets export to LeRobot")
    episodes = store.episodes()
    if not episodes:
        raise InteropError(f"{dataset} holds no committed episode: nothing to export")
    pq = pyarrow_parquet()
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    made = _missing_parents(tmp)
    try:
        tmp.mkdir(parents=True)
        report = _write(store, tmp, images, codec, task or f"drive {meta.env_id}", pq, on_progress)
        os.rename(tmp, out)
    except BaseException as exc:
        _discard(tmp, made)
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"the export to {out} was stopped; nothing was written: run it again") from None
        if is_disk_full(exc):
            raise InteropError(f"--out {out}: the disk is full (no space left on device); nothing was "
                               "written (the partial export was removed): free some space or choose another "
                               "--out") from None
        raise
    report.path = out
    return report


def _missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet (the export creates them), nearest first."""
    return [p for p in path.parents if not p.exists()]


def _discard(tmp: Path, made: list[Path]) -> None:
    """Remove the partial export (Ctrl-C held off meanwhile) and the parent folders it created."""
    discard_store(tmp)
    for folder in made:
        try:
            folder.rmdir()  # only if still empty: never anything someone else put there
        except OSError:
            break


def _features(store: DatasetStore, images: bool, fps: int, codec: str) -> dict[str, dict[str, Any]]:
    meta = store.meta
    h, w, c = meta.frame_shape
    camera: dict[str, Any] = {"dtype": "image" if images else "video", "shape": [h, w, c],
                              "names": ["height", "width", "channels"]}
    if not images:
        camera["info"] = {"video.height": h, "video.width": w, "video.codec": codec, "video.pix_fmt": "yuv420p",
                          "video.is_depth_map": False, "video.fps": fps, "video.channels": c, "has_audio": False}
    features: dict[str, dict[str, Any]] = {fmt.IMAGE_KEY: camera}
    if meta.telemetry:
        names = fmt.element_names(meta.telemetry)
        features[fmt.STATE_KEY] = {"dtype": "float32", "shape": [len(names)], "names": names}
    names = fmt.element_names(meta.actions)
    features[fmt.ACTION_KEY] = {"dtype": "float32", "shape": [len(names)], "names": names}
    features["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    features["perturbed"] = {"dtype": "bool", "shape": [1], "names": None}
    return {**features, **fmt.DEFAULT_FEATURES}


def _columns(store: DatasetStore, index: int, meta_pos: int, first: int, fps: int) -> dict[str, np.ndarray]:
    """Every non-camera column of one episode, by LeRobot feature name."""
    meta = store.meta
    n = store.episode(index)["reward"].shape[0]
    cols: dict[str, np.ndarray] = {}
    if meta.telemetry:
        cols[fmt.STATE_KEY] = np.concatenate([store.read_array(index, f"telemetry/{s.name}") for s in meta.telemetry], 1)
    cols[fmt.ACTION_KEY] = np.concatenate([store.read_array(index, f"actions/{s.name}") for s in meta.actions], 1)
    cols["next.reward"] = store.read_array(index, "reward").astype(np.float32)
    cols["next.done"] = np.arange(n) == n - 1
    cols["perturbed"] = store.read_array(index, "perturbed").astype(bool)
    cols["timestamp"] = (np.arange(n) / fps).astype(np.float32)
    cols["frame_index"] = np.arange(n, dtype=np.int64)
    cols["episode_index"] = np.full(n, meta_pos, np.int64)
    cols["index"] = np.arange(first, first + n, dtype=np.int64)
    cols["task_index"] = np.zeros(n, np.int64)
    return cols


def _png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def _write(store: DatasetStore, root: Path, images: bool, codec: str, task: str, pq: Any,
           on_progress: Progress | None = None) -> ExportReport:
    import pyarrow as pa

    fps = max(1, round(store.meta.fps))
    features = _features(store, images, fps, codec)
    h, w, _ = store.meta.frame_shape
    data_path = root / fmt.DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True)
    video_rel = fmt.VIDEO_PATH.format(video_key=fmt.IMAGE_KEY, chunk_index=0, file_index=0)
    video = None
    if not images:
        (root / video_rel).parent.mkdir(parents=True)
        video = VideoWriter(root / video_rel, fps, h, w, codec)
    schema = _data_schema(pa, features)
    writer = pq.ParquetWriter(str(data_path), schema, compression="snappy")
    rows, ep_stats, lengths, first = [], [], [], 0
    try:
        episodes = store.episodes()
        for pos, info in enumerate(episodes):
            frames = store.read_array(info.index, "frames")
            cols = _columns(store, info.index, pos, first, fps)
            if images:
                cols[fmt.IMAGE_KEY] = np.array([{"bytes": _png(f), "path": None} for f in frames], dtype=object)
            else:
                assert video is not None
                video.add(frames)
            writer.write_table(pa.table({k: _arrow(pa, k, cols[k], features) for k in schema.names}, schema=schema))
            stats = {k: fmt.feature_stats(v.astype(np.float64).reshape(len(v), -1))
                     for k, v in cols.items() if k != fmt.IMAGE_KEY}
            stats[fmt.IMAGE_KEY] = fmt.image_stats(frames)
            ep_stats.append(stats)
            rows.append(_episode_row(pos, len(frames), first, fps, task, images, stats))
            lengths.append(len(frames))
            if on_progress is not None:
                on_progress(len(frames), pos + 1, len(episodes))
            first += len(frames)
    finally:
        writer.close()
        if video is not None:
            video.close()
    _write_meta(store, root, features, fps, task, rows, ep_stats, lengths, pq)
    return ExportReport(root, len(rows), first, "image" if images else f"video ({codec})", list(features))


def _data_schema(pa: Any, features: dict[str, dict[str, Any]]) -> Any:
    fields = []
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            fields.append(pa.field(key, pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
        elif ft["shape"] == [1]:
            fields.append(pa.field(key, pa.from_numpy_dtype(np.dtype(ft["dtype"]))))
        else:
            fields.append(pa.field(key, pa.list_(pa.from_numpy_dtype(np.dtype(ft["dtype"])), ft["shape"][0])))
    hf = {"info": {"features": {k: _hf_feature(ft) for k, ft in features.items() if ft["dtype"] != "video"}}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(hf)})


def _hf_feature(ft: dict[str, Any]) -> dict[str, Any]:
    """The `datasets.Features` JSON of one feature, as LeRobot's `get_hf_features_from_features`."""
    if ft["dtype"] == "image":
        return {"_type": "Image"}
    if ft["shape"] == [1]:
        return {"dtype": ft["dtype"], "_type": "Value"}
    return {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": ft["shape"][0], "_type": "Sequence"}


def _arrow(pa: Any, key: str, values: np.ndarray, features: dict[str, dict[str, Any]]) -> Any:
    ft = features[key]
    if ft["dtype"] == "image":
        return pa.array(list(values), type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    if ft["shape"] == [1]:
        return pa.array(values.reshape(-1).astype(ft["dtype"]))
    flat = pa.array(values.astype(ft["dtype"]).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, ft["shape"][0])


def _episode_row(pos: int, n: int, first: int, fps: int, task: str, images: bool, stats: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "episode_index": pos, "tasks": [task], "length": n,
        "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": first, "dataset_to_index": first + n,
    }
    if not images:
        key = fmt.IMAGE_KEY
        row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": first / fps, f"videos/{key}/to_timestamp": (first + n) / fps})
    for feat, s in stats.items():
        for name, value in s.items():
            row[f"stats/{feat}/{name}"] = value
    row["meta/episodes/chunk_index"] = 0
    row["meta/episodes/file_index"] = 0
    return row


def _write_meta(store: DatasetStore, root: Path, features: dict[str, dict[str, Any]], fps: int, task: str,
                rows: list[dict[str, Any]], ep_stats: list[dict[str, Any]], lengths: list[int], pq: Any) -> None:
    import pyarrow as pa

    episodes_path = root / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), str(episodes_path))
    pq.write_table(_tasks_table(pa, [task]), str(root / fmt.TASKS_PATH))
    stats = {k: fmt.merge_stats([s[k] for s in ep_stats], lengths) for k in ep_stats[0]}
    positions = {info.index: pos for pos, info in enumerate(store.episodes())}
    splits = {s: sorted(positions[i] for i in store.attrs.get("splits", {}).get(s, []) if i in positions)
              for s in ("val", "test")}
    info = {
        "codebase_version": fmt.CODEBASE_VERSION, "robot_type": store.meta.env_id,
        "total_episodes": len(rows), "total_frames": int(sum(lengths)), "total_tasks": 1,
        "chunks_size": fmt.CHUNKS_SIZE, "data_files_size_in_mb": fmt.DATA_FILE_MB,
        "video_files_size_in_mb": fmt.VIDEO_FILE_MB, "fps": fps,
        "splits": _split_ranges(len(rows), splits), "data_path": fmt.DATA_PATH,
        "video_path": None if features[fmt.IMAGE_KEY]["dtype"] == "image" else fmt.VIDEO_PATH,
        "features": features,
    }
    drivelab = {
        "format": "drivelab.lerobot-export", "version": 1, "dataset_attrs": store.meta.to_attrs(),
        "splits": splits, "source_episode_indices": list(positions),
        "episode_info": [{k: v for k, v in e.attrs.items() if k not in ("moments", "committed")} for e in store.episodes()],
    }
    for rel, payload in ((fmt.INFO_PATH, info), (fmt.STATS_PATH, stats), (fmt.DRIVELAB_PATH, drivelab)):
        write_text(root / rel, json.dumps(payload, indent=2), flag="--out")


def _tasks_table(pa: Any, tasks: list[str]) -> Any:
    """``meta/tasks.parquet`` as pandas writes LeRobot's frame (index = task text)."""
    pandas_meta = {
        "index_columns": ["__index_level_0__"], "column_indexes": [],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
        "creator": {"library": "drivelab"}, "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def _split_ranges(n: int, splits: dict[str, list[int]]) -> dict[str, str]:
    """LeRobot's ``start:end`` episode ranges: train, val, test when each is contiguous."""
    val, test = splits["val"], splits["test"]
    train = sorted(set(range(n)) - set(val) - set(test))
    out = {}
    for name, eps in (("train", train), ("val", val), ("test", test)):
        if eps and eps != list(range(eps[0], eps[-1] + 1)):
            return {"train": f"0:{n}"}
        if eps:
            out[name] = f"{eps[0]}:{eps[-1] + 1}"
    return out
