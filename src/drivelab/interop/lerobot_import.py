"""`drivelab data import lerobot`: a LeRobot v3.0 dataset folder -> a drivelab dataset.

What is read (see `drivelab.interop.lerobot_format`): ``meta/info.json`` (its
``codebase_version`` must be one we read; v2.x datasets are converted by LeRobot's own
``convert_dataset_v21_to_v30`` first), the episode table, the data table(s), and one camera's
frames (from the MP4 at each episode's ``from_timestamp``, or the PNG bytes of an ``image``
feature). ``observation.state`` becomes telemetry and ``action`` the actions, split into named
signals by the features' ``names`` (`lerobot_format.specs_from_names`). A dataset drivelab
exported carries ``meta/drivelab.json``; then the original signals, fps, splits and episode
info come back exactly.

Everything but the frames is read and checked before the store is created: the type of every
field read from info.json, meta/drivelab.json and the episode table, the ``video_path`` pattern
(only LeRobot's placeholders), that every file it names lies inside the dataset folder
(`drivelab.interop.source_paths.inside`), and that one episode fits in memory. A frame that does
not decode or has another size than the feature says stops the import, and the half-written
store is removed (`dataset_out`). Messages name the file and field, never repeat file content.
"""

from __future__ import annotations

import io
import json
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from drivelab.data.dataset_out import check_new_dataset, dataset_out
from drivelab.data.records import DatasetMeta, EpisodeRecord
from drivelab.interop import lerobot_format as fmt
from drivelab.interop.dataset_out import (
    InteropError,
    check_import_fits,
    check_split_counts,
    tail_splits,
)
from drivelab.interop.deps import pyarrow_parquet
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
    _camera_shape(features, camera, info_path)
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
    source = _Source(root, info, _rows(episodes, root / fmt.EPISODES_DIR), {}, camera, saved)
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


def _camera_shape(features: dict[str, dict[str, Any]], camera: str, info_path: Path) -> tuple[int, int, int]:
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


def _meta(src: _Source) -> tuple[DatasetMeta, dict[str, list[int]] | None]:
    """drivelab's metadata: restored from meta/drivelab.json, else derived from the features."""
    info_path = src.root / fmt.INFO_PATH
    shape = _camera_shape(src.info["features"], src.camera, info_path)
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
                   test_episodes: int = 0) -> LeRobotImport:
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
    with dataset_out(out, meta, InteropError) as ds:
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


def _frames(src: _Source, row: dict[str, Any], sl: slice, shape: tuple[int, ...]) -> np.ndarray:
    n = sl.stop - sl.start
    if src.info["features"][src.camera]["dtype"] == "video":
        key = src.camera
        frames = read_video(_video_path(src, row), float(row[f"videos/{key}/from_timestamp"]), n, float(src.info["fps"]))
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


def _disk_lower_bound(src: _Source) -> int:
    """Bytes the import needs at least: the (compressed) frames' own files; stored lossless
    (Blosc lz4), the frames take more than the AV1 video or the PNG bytes they come from."""
    if src.info["features"][src.camera]["dtype"] == "video":
        files = {_video_path(src, row) for row in src.episodes}
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
