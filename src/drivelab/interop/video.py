"""Camera frames as MP4 through PyAV, encoded the way LeRobot encodes them.

LeRobot (`video_utils.encode_video_frames`) writes ``yuv420p`` video with a keyframe every
2 frames (``g=2``) and ``crf=30``, AV1 (``libsvtav1``) by default; we use the same settings so
its decoder seeks our files as fast as its own. Episodes are appended to one stream back to back,
frame ``i`` at ``pts = i`` in a ``1/fps`` time base, so episode ``k`` starts at
``from_timestamp = frames before it / fps`` exactly as LeRobot's concatenated files do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from drivelab.interop.dataset_out import InteropError
from drivelab.interop.deps import pyav
from drivelab.media import CODECS, Mp4Writer

CANONICAL = {encoder: name for name, encoder in CODECS.items()}


class VideoWriter:
    """One MP4 stream being written: frames go in episode after episode."""

    def __init__(self, path: Path, fps: int, height: int, width: int, codec: str = "av1") -> None:
        pyav()  # the interop extra's one-line message when PyAV is missing
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr otherwise
        if codec not in CODECS:
            raise InteropError(f"--codec {codec}: use one of {', '.join(CODECS)}")
        if height % 2 or width % 2:
            raise InteropError(f"frames are {height}x{width}: yuv420p video needs even sizes; use --images")
        self._writer = Mp4Writer(path, fps, height, width, codec, options={"g": "2", "crf": "30"})

    @property
    def frames(self) -> int:
        return self._writer.frames

    def add(self, frames: np.ndarray) -> None:
        for rgb in frames:
            self._writer.add(rgb)

    def close(self) -> None:
        self._writer.close()


def read_video(path: Path, start_s: float, count: int, fps: float) -> np.ndarray:
    """``count`` RGB frames from ``start_s`` on (decoded from the keyframe before it)."""
    av = pyav()
    try:
        container = av.open(str(path), "r")
    except (OSError, av.error.FFmpegError) as exc:
        raise InteropError(f"{path}: cannot open the video ({type(exc).__name__}): the dataset is damaged") from None
    frames: list[np.ndarray] = []
    with container:
        if not container.streams.video:
            raise InteropError(f"{path}: the file holds no video stream")
        stream = container.streams.video[0]
        first = round(start_s * fps)
        try:
            if first > 0:
                container.seek(int(start_s / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                index = round(float(frame.pts * stream.time_base) * fps) if frame.pts is not None else None
                if index is None or index < first:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == count:
                    break
        except (OSError, av.error.FFmpegError) as exc:  # a truncated or damaged file
            raise InteropError(f"{path}: the video cannot be decoded from {start_s:.3f} s "
                               f"({type(exc).__name__}): the dataset is damaged") from None
    if len(frames) != count:
        raise InteropError(f"{path}: {len(frames)} frame(s) from {start_s:.3f} s, the episode needs {count}")
    return np.stack(frames)
