"""`drivelab data view`: a dataset as a page a user opens from disk (``index.html`` + one MP4 per episode).

Every episode is listed (split, length, where it came from, DAgger round and beta, damage and NaN
flags); the chosen ones are encoded as H.264 MP4 with PyAV (the FFmpeg libraries behind LeRobot's
and torchvision's video code, already the ``interop`` extra) and shown with a time cursor moving
over plots of every action and telemetry signal (`dataset_view_page`). With ``--run``, the run's
predictions are drawn dashed beside the labels (`view_predictions`). Files are written through
`drivelab.outputs.write_generated`: a second view into the same folder replaces what the first
wrote, never a file the user put there.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.data.edit_ops import frame_drivers, known_episodes, parse_ids
from drivelab.data.inspect import count_nonfinite, episode_source
from drivelab.data.records import DatasetError, EpisodeInfo
from drivelab.data.store import DatasetStore
from drivelab.extras import require
from drivelab.outputs import check_output_dir, check_regenerable, write_generated
from drivelab.reports.dataset_view_page import render_page

#: Episodes rendered as video when ``--episodes`` is not given (every episode is listed anyway).
DEFAULT_SHOWN = 4
HEADER = ["episode", "split", "frames", "seconds", "source", "round", "beta", "return", "flags"]


@dataclass(frozen=True)
class ViewPage:
    index: Path
    episodes_listed: int
    episodes_shown: int
    bytes: int
    seconds: float


def video_name(index: int) -> str:
    return f"episode_{index:06d}.mp4"


def encode_mp4(frames: np.ndarray, fps: float) -> tuple[bytes, float]:
    """H.264 MP4 bytes of RGB ``frames`` and the video's frame rate (the dataset's, rounded).

    yuv420p needs even sides, so an odd frame is padded by one edge pixel; a keyframe every 10
    frames keeps scrubbing with the cursor responsive at a small size cost.
    """
    av = require("av", "`drivelab data view` (episode videos)", "interop")
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    rate = Fraction(max(1, round(fps)))
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate, options={"g": "10", "crf": "23", "preset": "veryfast"})
        stream.pix_fmt = "yuv420p"
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue(), float(rate)


def one_hot_names(description: str, size: int) -> list[str]:
    """The component names of a one-hot signal (the traffic world's ``command``), read from its
    description ``"one-hot route command: left, straight, right"``; [] for any other signal."""
    head, _, names = description.partition(":")
    parts = [n.strip() for n in names.split(",")]
    return parts if size > 1 and "one-hot" in head and len(parts) == size and all(parts) else []


def _round(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(f"{v:.4g}") for v in values.astype(np.float64)]


def episode_series(store: DatasetStore, info: EpisodeInfo, predicted: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Every action (with the run's prediction, dashed), every telemetry signal, reward, perturbation, driver."""
    series = []
    for kind, specs in (("actions", store.meta.actions), ("telemetry", store.meta.telemetry)):
        for spec in specs:
            values = store.read_array(info.index, f"{kind}/{spec.name}").reshape(info.length, -1)
            names = [spec.name] if spec.size == 1 else [f"{spec.name}[{k}]" for k in range(spec.size)]
            onehot = one_hot_names(spec.description, spec.size)
            names = [f"{spec.name}={n}" for n in onehot] if onehot else names
            lines = [{"name": ("label " if kind == "actions" else "") + n, "values": _round(values[:, k])}
                     for k, n in enumerate(names)]
            if spec.name in predicted:
                lines.append({"name": "predicted", "values": _round(predicted[spec.name]), "dashed": True})
            series.append({"label": f"{kind}/{spec.name}", "unit": spec.unit, "low": spec.low, "high": spec.high,
                           "lines": lines, "onehot": bool(onehot)})
    series.append({"label": "reward", "unit": "", "low": None, "high": None,
                   "lines": [{"name": "reward", "values": _round(store.read_array(info.index, "reward"))}]})
    perturbed = store.read_array(info.index, "perturbed").astype(np.float64)
    policy = (frame_drivers(info) == "policy").astype(np.float64)
    series.append({"label": "perturbed / policy drove", "unit": "", "low": 0, "high": 1,
                   "lines": [{"name": "perturbed", "values": _round(perturbed)},
                             {"name": "policy", "values": _round(policy)}]})
    return series


def _rows(store: DatasetStore, shown: set[int]) -> list[dict[str, Any]]:
    committed, uncommitted, damaged = store.scan()
    bad = set(count_nonfinite(store, committed)["episodes"])
    rows = []
    for e in committed:
        a = e.attrs
        flags = ", ".join(f for f, on in (("NaN/Inf", e.index in bad),) if on)
        beta = a.get("live_beta")
        rows.append({"index": e.index, "viewable": e.index in shown, "cells": [
            e.index, store.split_of(e.index), e.length, f"{e.length / store.meta.fps:.1f}",
            episode_source(a, str(store.attrs.get("source") or "")), a.get("live_round", ""),
            f"{beta:.2f}" if isinstance(beta, int | float) else "",
            f"{a['return']:.1f}" if isinstance(a.get("return"), int | float) else "", flags]})
    for rel in uncommitted:
        rows.append({"index": -1, "viewable": False, "cells": [rel, "", "", "", "", "", "", "", "uncommitted"]})
    for group in damaged:
        rows.append({"index": -1, "viewable": False, "cells": [group.path, "", "", "", "", "", "", "",
                                                               f"damaged: {group.reason}"]})
    return rows


def build_view(dataset: str | Path, out_dir: str | Path | None = None, episodes: str | None = None,
               run: str | None = None, runs_root: str | Path = "runs", force: bool = False) -> ViewPage:
    """Write ``index.html`` and the chosen episodes' MP4 files into ``out_dir``; checks come first."""
    started = time.perf_counter()
    dataset = Path(dataset)
    store = DatasetStore.open(dataset)
    out = Path(out_dir) if out_dir is not None else dataset.parent / f"{dataset.name}-view"
    check_output_dir(out, "--out")
    committed = store.episodes()
    if episodes is not None:
        wanted = parse_ids(episodes, "--episodes")
        known = known_episodes(store, wanted)
        chosen = [known[i] for i in dict.fromkeys(wanted)]
    else:
        chosen = committed[:DEFAULT_SHOWN]
    if not chosen:
        raise DatasetError(f"{dataset} has no committed episode to view: collect some first")
    paths = [out / "index.html", *(out / video_name(e.index) for e in chosen)]
    check_regenerable(paths, "--out", force)
    require("av", "`drivelab data view` (episode videos)", "interop")
    predicted: dict[int, dict[str, np.ndarray]] = {}
    if run is not None:
        from drivelab.reports.view_predictions import predict_episodes

        predicted = predict_episodes(run, runs_root, store, chosen)
    out.mkdir(parents=True, exist_ok=True)
    data_episodes = []
    for info in chosen:
        payload, video_fps = encode_mp4(store.read_array(info.index, "frames"), store.meta.fps)
        write_generated(out / video_name(info.index), payload, force=force, flag="--out")
        data_episodes.append({
            "index": info.index, "split": store.split_of(info.index), "length": info.length,
            "fps": store.meta.fps, "video_fps": video_fps, "video": video_name(info.index),
            "source": episode_source(info.attrs, str(store.attrs.get("source") or "")),
            "series": episode_series(store, info, predicted.get(info.index, {})),
        })
    frames = sum(e.length for e in committed)
    meta = [f"{store.meta.env_id} @ {store.meta.fps:g} fps, frames {'x'.join(map(str, store.meta.frame_shape))}; "
            f"{len(committed)} episodes, {frames} frames; {len(chosen)} shown as video"
            + (f"; predictions of run {run} dashed" if run else "")]
    meta += [f"edit: {e.get('operation')} {' '.join(e.get('args', []))} ({e.get('at')})"
             for e in store.attrs.get("edits", []) or []]
    page = render_page(f"{dataset.name}: data view", meta, HEADER, _rows(store, {e.index for e in chosen}),
                       {"dataset": str(dataset), "episodes": data_episodes})
    index = write_generated(out / "index.html", page, force=force, flag="--out")
    size = sum(p.stat().st_size for p in paths)
    return ViewPage(index, len(committed), len(chosen), size, time.perf_counter() - started)
