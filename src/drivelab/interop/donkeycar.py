"""`drivelab data import donkeycar`: donkeycar tubs -> a drivelab dataset.

Signals, and why they need no rescaling:

- ``user/angle`` -> action ``steering``: donkeycar's angle is -1 (full left) .. +1 (full
  right), the sign and range CarRacing's ``steering`` uses, so it is copied unchanged.
- ``user/throttle`` -> action ``accel_brake``: -1 .. +1, positive drives forward; negative is
  what the ESC does with it (brake, or reverse after a stop), the sign of drivelab's merged pedal.
- ``user/mode`` -> telemetry ``human`` (1.0 where a person drove, mode ``user``; 0.0 for the
  ``local_angle``/``local`` pilots); ``--mode user`` keeps only human-driven frames.
- every other numeric input (float, int, boolean, vectors) -> telemetry named with ``/`` as
  ``_`` (``imu/acl_x`` -> ``imu_acl_x``); one missing from some records (donkeycar omits None
  values) is dropped and reported.

Episodes: each tub session (``_session_id``) is cut where the timestamps jump by more than
``gap_s``, where records are missing (deleted in donkeycar, or dropped by ``--mode``), and every
``max_episode_frames`` frames (one write holds one episode in memory). The frame rate is the
median timestamp step (donkeycar's default 20 Hz if the tub has no timestamps).

Everything is checked before the dataset is created: every record's values (a NaN angle is named
by catalog line and key), every image's header (size from the header, never decoded first: a
30000x30000 "decompression bomb" is refused by its header), and the memory one episode takes
while it is written and the disk space the import needs at least (`check_import_fits`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
from PIL import Image

from drivelab.data.dataset_out import Progress, check_new_dataset, dataset_out
from drivelab.data.records import DatasetMeta, EpisodeRecord
from drivelab.interop.dataset_out import (
    InteropError,
    check_import_fits,
    check_size,
    check_split_counts,
    fit_frame,
    tail_splits,
)
from drivelab.interop.donkeycar_tub import Tub, TubRecord, read_tub
from drivelab.interop.source_paths import clipped, short_repr
from drivelab.sim.base import SignalSpec

ANGLE, THROTTLE, MODE = "user/angle", "user/throttle", "user/mode"
DEFAULT_FPS = 20.0  # donkeycar's DRIVE_LOOP_HZ
#: The largest camera image imported (4096 x 4096 px, read from the header before decoding): far
#: above any car camera, far below what makes one decode take gigabytes (a decompression bomb).
MAX_IMAGE_PIXELS = 4096 * 4096
FLOAT32_MAX = float(np.finfo(np.float32).max)
ACTIONS = (
    SignalSpec("steering", size=1, low=-1.0, high=1.0,
               description="donkeycar user/angle: -1 full left, +1 full right"),
    SignalSpec("accel_brake", size=1, low=-1.0, high=1.0,
               description="donkeycar user/throttle: >0 forward, <0 brake/reverse (ESC)"),
)


@dataclass(frozen=True)
class DonkeyOptions:
    size: tuple[int, int] | None = None  # (H, W); None keeps the tub's own frame size
    val_episodes: int = 0
    test_episodes: int = 0
    gap_s: float = 1.0
    mode: str | None = None  # "user": human-driven frames only
    max_episode_frames: int = 2000


@dataclass
class DonkeyImport:
    """What an import wrote, and what it left out of the tubs and why."""

    path: Path
    tubs: int
    episodes: int = 0
    frames: int = 0
    fps: float = DEFAULT_FPS
    deleted: int = 0
    other_mode: int = 0
    telemetry: dict[str, str] = field(default_factory=dict)  # drivelab name -> tub key
    dropped_keys: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def import_donkeycar(tubs: Sequence[str | Path], out: str | Path, options: DonkeyOptions = DonkeyOptions(),
                     on_progress: Progress | None = None) -> DonkeyImport:
    """Import the tubs (in the order given) into a new dataset at ``out``."""
    start = time.perf_counter()
    out = Path(out)
    check_new_dataset(out, InteropError)
    size = check_size(options.size)
    check_split_counts(options.val_episodes, options.test_episodes)
    _check_options(options)
    if not tubs:
        raise InteropError("give at least one tub folder")
    read = [read_tub(Path(p)) for p in tubs]
    report = DonkeyImport(out, len(read), deleted=sum(t.deleted for t in read))
    kept = _kept_records(read, options.mode, report)
    report.telemetry, sizes, report.dropped_keys = _telemetry_keys(read, [r for _, rs in kept for r in rs])
    episodes = [ep for tub, records in kept for ep in _episodes(records, options)]
    if not episodes:
        raise InteropError(f"{', '.join(map(str, tubs))}: no frame left to import (nothing was written)")
    report.fps = _fps(episodes)
    sizes_wh = {r.image: _image_size(r) for ep in episodes for r in ep}
    shape = (*size, 3) if size else _common_frame_shape(episodes, sizes_wh)
    check_import_fits(out, shape, max(len(ep) for ep in episodes),
                      _disk_lower_bound(sizes_wh, shape),
                      "use a smaller --size H W" if size else "pass --size H W to shrink the frames")
    val, test = tail_splits(len(episodes), options.val_episodes, options.test_episodes)
    meta = DatasetMeta(
        env_id="donkeycar", fps=report.fps, frame_shape=shape, actions=ACTIONS,
        telemetry=tuple(SignalSpec(n, size=sizes[n], description=f"donkeycar {k}") for n, k in report.telemetry.items()),
    )
    with dataset_out(out, meta, InteropError, on_progress, len(episodes)) as ds:
        for records in episodes:
            ds.add(_episode_record(records, report.telemetry, sizes, shape))
        ds.store.assign_splits(val=val, test=test)
        ds.store.update_attrs(
            source="donkeycar", source_paths=[str(Path(p).resolve()) for p in tubs],
            tub_versions=[t.version for t in read], mode_filter=options.mode, gap_s=options.gap_s,
            deleted_records_skipped=report.deleted, other_mode_skipped=report.other_mode,
            telemetry_keys=report.telemetry, dropped_keys=report.dropped_keys,
        )
        report.episodes, report.frames = ds.episodes, ds.frames
    report.seconds = time.perf_counter() - start
    return report


def _check_options(options: DonkeyOptions) -> None:
    """One precise refusal per bad option, before any tub is read."""
    if options.mode not in (None, "user"):
        raise InteropError(f"--mode {short_repr(options.mode, 40)}: the one mode is `user` (keep human-driven "
                           "frames only); leave --mode out to keep every frame")
    if not options.gap_s > 0:  # also refuses NaN
        raise InteropError(f"--gap {options.gap_s:g}: give the seconds between records that start a new "
                           "episode, a number > 0 (default 1)")
    if options.max_episode_frames < 1:
        raise InteropError(f"max_episode_frames {options.max_episode_frames}: use at least 1")


def _kept_records(tubs: list[Tub], mode: str | None, report: DonkeyImport) -> list[tuple[Tub, list[TubRecord]]]:
    out = []
    for tub in tubs:
        for key in (ANGLE, THROTTLE):
            if key not in tub.inputs:
                raise InteropError(f"{tub.path}: the tub records no {key} (inputs: {clipped(', '.join(tub.inputs))})")
        records = tub.records
        if mode is not None:
            records = [r for r in records if r.values.get(MODE) == mode]
            report.other_mode += len(tub.records) - len(records)
        out.append((tub, records))
    return out


def _telemetry_keys(tubs: list[Tub], records: list[TubRecord]) -> tuple[dict[str, str], dict[str, int], list[str]]:
    """Telemetry names -> tub keys, sizes, and the numeric keys dropped (absent from some record)."""
    candidates: list[str] = []
    for tub in tubs:
        candidates += [k for k in tub.numeric_keys() if k not in (ANGLE, THROTTLE) and k not in candidates]
    names: dict[str, str] = {"human": MODE} if any(MODE in t.inputs for t in tubs) else {}
    sizes = {"human": 1}
    dropped = []
    for key in candidates:
        values = [r.values.get(key) for r in records]
        if not records or any(v is None for v in values):
            dropped.append(key)
            continue
        for r in records:
            _check_numbers(r, key, allow_vector=True)
        lengths = {len(v) if isinstance(v, list) else 1 for v in values}
        if len(lengths) != 1:
            raise InteropError(f"{clipped(key)}: its vectors have different lengths {sorted(lengths)} across records")
        name = key.replace("/", "_")
        names[name], sizes[name] = key, lengths.pop()
    for key in (ANGLE, THROTTLE):
        for r in records:
            _check_numbers(r, key, allow_vector=False)
    return names, sizes, dropped


def _check_numbers(record: TubRecord, key: str, allow_vector: bool) -> None:
    """``key`` of ``record`` is a finite number (or, for telemetry, a list of them), else the
    record and the key are named: a NaN found later would only say "NaN in telemetry"."""
    value = record.values.get(key)
    items = value if allow_vector and isinstance(value, list) and value else [value]
    for v in items:
        if isinstance(v, bool) and allow_vector:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InteropError(f"{record.where}: {clipped(key)} is {short_repr(v, 40)}, not a number; "
                               "fix or delete that record in donkeycar (nothing was written)")
        try:
            finite = math.isfinite(v) and abs(float(v)) <= FLOAT32_MAX  # stored as float32
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            raise InteropError(f"{record.where}: {clipped(key)} is {short_repr(v, 40)}, not a finite float32 number; "
                               "fix or delete that record in donkeycar (nothing was written)")


def _episodes(records: list[TubRecord], options: DonkeyOptions) -> list[list[TubRecord]]:
    """Cut one tub's records at session changes, missing records, time gaps and the length cap."""
    episodes: list[list[TubRecord]] = []
    for r in records:
        prev = episodes[-1][-1] if episodes else None
        new = (
            prev is None or r.session != prev.session or r.index != prev.index + 1
            or len(episodes[-1]) >= options.max_episode_frames
            or (r.timestamp_ms is not None and prev.timestamp_ms is not None
                and abs(r.timestamp_ms - prev.timestamp_ms) > 1000.0 * options.gap_s)
        )
        if new:
            episodes.append([r])
        else:
            episodes[-1].append(r)
    return episodes


def _fps(episodes: list[list[TubRecord]]) -> float:
    steps = [b.timestamp_ms - a.timestamp_ms for ep in episodes for a, b in pairwise(ep)
             if a.timestamp_ms is not None and b.timestamp_ms is not None]
    steps = [s for s in steps if s > 0]
    return round(1000.0 / float(np.median(steps)), 3) if steps else DEFAULT_FPS


def _image_size(record: TubRecord) -> tuple[int, int]:
    """(width, height) of the record's image, from its header; refused if it is not an image a
    camera makes (empty, another format, corrupt, or larger than MAX_IMAGE_PIXELS)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(record.image) as img:
                wh = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InteropError(_too_large(record, None)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InteropError(f"{record.where}: {record.image.name} is not an image PIL can read "
                           f"({type(exc).__name__}); delete that record in donkeycar") from None
    if wh[0] < 1 or wh[1] < 1 or wh[0] * wh[1] > MAX_IMAGE_PIXELS:
        raise InteropError(_too_large(record, wh))
    return wh


def _too_large(record: TubRecord, wh: tuple[int, int] | None) -> str:
    size = f"{wh[0]}x{wh[1]} px" if wh else "beyond PIL's decompression-bomb limit"
    return (f"{record.where}: {record.image.name} is {size}; drivelab imports camera images of 1 to "
            f"{MAX_IMAGE_PIXELS} px (refused from its header, before decoding); delete that record")


def _disk_lower_bound(sizes_wh: dict[Path, tuple[int, int]], shape: tuple[int, ...]) -> int:
    """Bytes the dataset needs at least: the images' own (JPEG) bytes, scaled to the frame size.

    Frames are stored losslessly (Blosc lz4), which takes more room than the JPEGs did; so if
    even the JPEGs' bytes do not fit, the import cannot, and is refused before it starts.
    """
    total = 0.0
    for path, (w, h) in sizes_wh.items():
        total += path.stat().st_size * min(1.0, shape[0] * shape[1] / max(1, w * h))
    return int(total)


def _common_frame_shape(episodes: list[list[TubRecord]],
                        sizes_wh: dict[Path, tuple[int, int]]) -> tuple[int, int, int]:
    """The one frame size of every image (read from the headers), or an error naming two."""
    first: tuple[Path, tuple[int, int]] | None = None
    for ep in episodes:
        for r in ep:
            wh = sizes_wh[r.image]
            if first is None:
                first = (r.image, wh)
            elif wh != first[1]:
                raise InteropError(
                    f"mismatched frame sizes: {first[0].name} is {first[1][0]}x{first[1][1]}, "
                    f"{r.image} is {wh[0]}x{wh[1]} (width x height): pass --size H W to resize all"
                )
    assert first is not None
    return first[1][1], first[1][0], 3


def _episode_record(records: list[TubRecord], telemetry: dict[str, str], sizes: dict[str, int],
                    shape: tuple[int, ...]) -> EpisodeRecord:
    frames = np.stack([_frame(r, shape) for r in records])
    n = len(records)
    tele = {}
    for name, key in telemetry.items():
        if key == MODE:
            tele[name] = np.array([[float(r.values.get(MODE) == "user")] for r in records], np.float32)
        else:
            tele[name] = np.asarray([r.values[key] for r in records], np.float32).reshape(n, sizes[name])
    return EpisodeRecord(
        frames=frames, telemetry=tele,
        actions={"steering": np.array([[r.values[ANGLE]] for r in records], np.float32),
                 "accel_brake": np.array([[r.values[THROTTLE]] for r in records], np.float32)},
        reward=np.zeros(n, np.float32), perturbed=np.zeros(n, bool),
        info={"source": "donkeycar", "tub": str(records[0].tub), "session": records[0].session,
              "first_index": records[0].index, "last_index": records[-1].index,
              "modes": sorted({str(r.values.get(MODE)) for r in records})},
    )


def _frame(record: TubRecord, shape: tuple[int, ...]) -> np.ndarray:
    """The record's image decoded to RGB at ``shape``; its header was checked by `_image_size`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(record.image) as img:
                if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:  # changed since it was checked
                    raise InteropError(_too_large(record, img.size))
                rgb = np.asarray(img.convert("RGB"), np.uint8)
    except InteropError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InteropError(f"{record.where}: {record.image.name} cannot be decoded ({type(exc).__name__}); "
                           "delete that record in donkeycar (nothing was written)") from None
    return fit_frame(rgb, shape[:2])
