"""A LeRobot v3.0 dataset folder read and checked before any frame (`read_source`).

``meta/info.json`` (its ``codebase_version``, the features the importer needs, fps, the
``video_path`` pattern with LeRobot's placeholders only), ``meta/drivelab.json`` when drivelab
exported the dataset, the episode table and the data columns: every field's type is checked,
every file a field names must lie inside the dataset folder (`source_paths.inside`), and each
episode's rows must match its length. `drivelab.interop.lerobot_import` turns the result into
episodes. Messages name the file and field, never repeat file content.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.interop import lerobot_format as fmt
from drivelab.interop.dataset_out import InteropError
from drivelab.interop.deps import pyarrow_parquet
from drivelab.interop.source_paths import clipped, inside, short_repr


@dataclass
class LeRobotSource:
    """A LeRobot dataset as read before any frame: info, episode rows, data columns."""

    root: Path
    info: dict[str, Any]
    episodes: list[dict[str, Any]]
    data: dict[str, np.ndarray]  # column -> values in global frame order (by `index`)
    camera: str
    drivelab: dict[str, Any] | None


def read_source(root: Path, camera: str | None) -> LeRobotSource:
    """Open ``root`` as a LeRobot v3 dataset and read everything but the frames."""
    info_path = root / fmt.INFO_PATH
    if not root.is_dir() or not info_path.is_file():
        raise InteropError(f"{root} is not a LeRobot dataset: expected {info_path} (a v3.0 dataset folder)")
    info = _json_file(root, fmt.INFO_PATH)
    if not isinstance(info, dict):
        raise InteropError(f"{info_path} must hold a JSON object: the dataset is damaged")
    version = info.get("codebase_version")
    if version not in fmt.READABLE_VERSIONS:
        raise InteropError(
            f"{info_path}: codebase_version {short_repr(version, 40)} is not one drivelab reads "
            f"({', '.join(fmt.READABLE_VERSIONS)}); convert it with LeRobot's convert_dataset_v21_to_v30 first"
        )
    features = _check_features(info, info_path)
    cameras = [k for k, f in features.items() if f.get("dtype") in ("video", "image")]
    if not cameras:
        raise InteropError(f"{info_path}: the dataset has no camera feature (dtype video or image)")
    if camera is None:
        camera = fmt.IMAGE_KEY if fmt.IMAGE_KEY in cameras else cameras[0]
    elif camera not in cameras:
        raise InteropError(f"--camera {short_repr(camera, 60)}: the dataset's cameras are {clipped(', '.join(cameras))}")
    camera_shape(features, camera, info_path)
    if fmt.ACTION_KEY not in features:
        raise InteropError(f"{info_path}: the dataset has no `action` feature: nothing to learn from")
    for key in (fmt.ACTION_KEY, fmt.STATE_KEY):
        if key in features:
            _vector_size(features, key, info_path)
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= MAX_FPS:  # NaN fails too
        raise InteropError(f"{info_path}: fps is {short_repr(fps, 40)}, not a frame rate > 0: the dataset is damaged")
    if features[camera]["dtype"] == "video":
        _check_video_path(info, info_path)
    pq = pyarrow_parquet()
    episodes = _read_tables(pq, root, fmt.EPISODES_DIR, None)
    columns = [k for k, f in features.items() if f.get("dtype") != "video" and (f.get("dtype") != "image" or k == camera)]
    data = _read_tables(pq, root, "data", columns)
    if "index" not in data:
        raise InteropError(f"{root / 'data'}: the data table has no `index` column: the dataset is damaged")
    extra = root / fmt.DRIVELAB_PATH
    saved = _drivelab_json(root) if extra.is_file() or extra.is_symlink() else None
    source = LeRobotSource(root, info, _rows(episodes, root / fmt.EPISODES_DIR), {}, camera, saved)
    try:
        order = np.argsort(np.asarray(data["index"], np.int64))
    except (TypeError, ValueError):
        raise InteropError(f"{root / 'data'}: the `index` column is not integers: the dataset is damaged") from None
    source.data = {k: _column(v, order) for k, v in data.items()}
    _check_episodes(source)
    return source


def _json_file(root: Path, rel: str) -> Any:
    """The JSON of ``root/rel`` (inside ``root``), or one line saying it is damaged."""
    path = inside(root, rel, str(root))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        why = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise InteropError(f"{root / rel} is not readable JSON ({why}): the dataset is damaged") from None


def _check_features(info: dict[str, Any], info_path: Path) -> dict[str, dict[str, Any]]:
    features = info.get("features")
    if not isinstance(features, dict) or not all(isinstance(f, dict) for f in features.values()):
        raise InteropError(f"{info_path}: `features` must map each feature name to an object (dtype, shape, "
                           f"names), not {type(features).__name__}: the dataset is damaged")
    return features


def _shape(features: dict[str, dict[str, Any]], key: str, info_path: Path) -> list[int]:
    shape = features[key].get("shape")
    if not isinstance(shape, list) or not shape or not all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in shape):
        raise InteropError(f"{info_path}: feature {clipped(key)} has shape {short_repr(shape, 40)}, not a list of "
                           "positive sizes: the dataset is damaged")
    return shape


def camera_shape(features: dict[str, dict[str, Any]], camera: str, info_path: Path) -> tuple[int, int, int]:
    shape = _shape(features, camera, info_path)
    if len(shape) != 3 or shape[2] != 3:
        raise InteropError(f"{clipped(camera)} has shape {shape}: drivelab stores RGB frames [H, W, 3]")
    return shape[0], shape[1], shape[2]


def _vector_size(features: dict[str, dict[str, Any]], key: str, info_path: Path) -> int:
    shape = _shape(features, key, info_path)
    if len(shape) != 1:
        raise InteropError(f"{info_path}: feature {key} has shape {shape}; drivelab reads vectors [n]")
    names = features[key].get("names")
    if names is not None and not isinstance(names, list | dict):
        raise InteropError(f"{info_path}: feature {key} has names {short_repr(names, 40)}, not a list")
    return shape[0]


#: Far above any camera; also keeps a huge integer from overflowing float() later.
MAX_FPS = 10_000

#: The placeholders LeRobot fills into ``video_path`` (lerobot/datasets/utils.py).
VIDEO_PLACEHOLDERS = ("video_key", "chunk_index", "file_index")


def _check_video_path(info: dict[str, Any], info_path: Path) -> None:
    """``video_path`` uses LeRobot's placeholders only, plain (``{chunk_index:03d}``), no
    attribute or item access: anything else would raise, or read attributes, in ``format``."""
    pattern = info.get("video_path") or fmt.VIDEO_PATH
    if not isinstance(pattern, str):
        raise InteropError(f"{info_path}: video_path is {short_repr(pattern, 40)}, not a path pattern")
    try:
        fields = [(name, spec) for _, name, spec, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError:
        raise InteropError(f"{info_path}: video_path {short_repr(pattern)} is not a valid pattern "
                           "(unbalanced braces)") from None
    for name, spec in fields:
        if name not in VIDEO_PLACEHOLDERS or "{" in spec:
            raise InteropError(
                f"{info_path}: video_path {short_repr(pattern)} has the placeholder {{{short_repr(name, 40)[1:-1]}}}; "
                f"LeRobot's are {', '.join('{' + p + '}' for p in VIDEO_PLACEHOLDERS)}"
            )
    try:
        pattern.format(video_key="k", chunk_index=0, file_index=0)
    except (ValueError, TypeError):
        raise InteropError(f"{info_path}: video_path {short_repr(pattern)} has a format its placeholders "
                           "cannot take") from None


def _drivelab_json(root: Path) -> dict[str, Any]:
    """meta/drivelab.json (what drivelab's export adds), checked field by field."""
    where = root / fmt.DRIVELAB_PATH
    saved = _json_file(root, fmt.DRIVELAB_PATH)
    if not isinstance(saved, dict) or not isinstance(saved.get("dataset_attrs"), dict):
        raise InteropError(f"{where} lacks its dataset_attrs object: the file is damaged; delete it to "
                           "import the dataset from its LeRobot features alone")
    splits = saved.get("splits")
    if splits is not None and not (isinstance(splits, dict) and all(
            isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
            for v in splits.values())):
        raise InteropError(f"{where}: `splits` must map val/test to lists of episode numbers: the file is damaged")
    infos = saved.get("episode_info")
    if infos is not None and not (isinstance(infos, list) and all(isinstance(i, dict) for i in infos)):
        raise InteropError(f"{where}: `episode_info` must be a list of objects: the file is damaged")
    return saved


def _read_tables(pq: Any, root: Path, rel: str, columns: list[str] | None) -> dict[str, list[Any]]:
    """Every ``chunk-*/file-*.parquet`` under ``root/rel``, concatenated, as python columns."""
    import pyarrow as pa

    folder = root / rel
    files = sorted(folder.glob("chunk-*/file-*.parquet"))
    if not files:
        raise InteropError(f"{folder} holds no chunk-*/file-*.parquet: the dataset is incomplete")
    out: dict[str, list[Any]] = {}
    for f in files:
        real = inside(root, str(f.relative_to(root)), str(folder))
        try:
            names = pq.read_schema(str(real)).names
            table = pq.read_table(str(real), columns=[c for c in columns if c in names] if columns else None)
        except (OSError, pa.ArrowException) as exc:
            detail = (str(exc).strip().splitlines() or [""])[0]
            detail = detail.replace(str(real), "").replace("''", "").strip(" :")[:120]
            raise InteropError(f"{f}: not a readable Parquet file ({type(exc).__name__}: {detail}); "
                               "the dataset is damaged or was not fully copied") from None
        for name in table.column_names:
            out.setdefault(name, []).extend(table.column(name).to_pylist())
    if columns:
        missing = [c for c in columns if c not in out]
        if missing:
            raise InteropError(f"{folder}: the data table lacks the column(s) {clipped(', '.join(missing))} that info.json lists")
    return out


#: Episode-table columns the importer reads, each an integer >= 0.
EPISODE_COLUMNS = ("episode_index", "length", "dataset_from_index", "dataset_to_index")


def _rows(columns: dict[str, list[Any]], folder: Path) -> list[dict[str, Any]]:
    names = [k for k in columns if not k.startswith("stats/")]
    if len({len(columns[k]) for k in names}) > 1:
        raise InteropError(f"{folder}: its parquet files do not all hold the same columns: the dataset is damaged")
    rows = [dict(zip(names, values, strict=True)) for values in zip(*(columns[k] for k in names), strict=True)]
    for row in rows:
        for key in EPISODE_COLUMNS:
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InteropError(f"{folder}: an episode row has {key} {short_repr(value, 40)}, not an "
                                   "integer >= 0: the dataset is damaged")
    return sorted(rows, key=lambda r: r["episode_index"])


def _column(values: list[Any], order: np.ndarray) -> np.ndarray:
    if values and isinstance(values[0], dict):  # an image struct {bytes, path}
        return np.array([values[i] for i in order], dtype=object)
    return np.asarray(values)[order]


def _check_episodes(src: LeRobotSource) -> None:
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
            video = video_path(src, row)
            if not video.is_file():
                raise InteropError(f"{video} is missing (episode {row['episode_index']} needs it)")


def video_path(src: LeRobotSource, row: dict[str, Any]) -> Path:
    """The episode's video file, from the checked ``video_path`` pattern; inside the dataset."""
    key = src.camera
    where = f"{src.root / fmt.EPISODES_DIR}: episode {row['episode_index']}"
    numbers = {}
    for name in ("chunk_index", "file_index", "from_timestamp"):
        value = row.get(f"videos/{key}/{name}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise InteropError(f"{where}: videos/{clipped(key)}/{name} is {short_repr(value, 40)}, not a number >= 0: "
                               "the dataset is damaged")
        numbers[name] = value
    rel = (src.info.get("video_path") or fmt.VIDEO_PATH).format(
        video_key=key, chunk_index=int(numbers["chunk_index"]), file_index=int(numbers["file_index"]))
    return inside(src.root, rel, f"{src.root / fmt.INFO_PATH} video_path ({where})")
