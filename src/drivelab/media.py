"""MP4 video in and out (PyAV, H.264 / AV1) and the font drivelab writes on pictures.

One place encodes video for every verb: evaluation and watch videos (H.264, a quality that
reads well: ``crf`` 23, a keyframe every 2 s), LeRobot's camera streams (`interop.video`, with
LeRobot's own settings) and `data view`. PyAV bundles its FFmpeg build, so no system codec is
needed. A 600-step CarRacing lap is ~0.3 MB as H.264 where the same frames as a GIF are ~2.3 MB.

The font is DejaVu Sans from matplotlib's own data (a core dependency), so text on frames is a
real, scalable font on every machine instead of Pillow's 11-pixel bitmap.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import ImageFont

#: drivelab's codec names -> FFmpeg encoder names
CODECS = {"h264": "libx264", "av1": "libsvtav1"}


class Mp4Writer:
    """Frames [H, W, 3] uint8 appended to one MP4 stream (yuv420p), frame i at pts i / fps.

    yuv420p needs even sizes: an odd height or width is padded by one black row / column (the
    picture keeps its pixels; LeRobot's streams, which must keep the frame size, refuse instead).
    """

    def __init__(self, path: str | Path, fps: float, height: int, width: int, codec: str = "h264",
                 options: dict[str, str] | None = None) -> None:
        import av  # imported on first use: `import drivelab` stays light

        self._av = av
        self.height, self.width = height + height % 2, width + width % 2
        self._rate = Fraction(fps).limit_denominator(1000)
        self._container = av.open(str(path), "w", format="mp4")
        self._stream = self._container.add_stream(
            CODECS[codec], rate=self._rate,
            options=options if options is not None else {"crf": "23", "g": str(max(1, round(2 * fps)))})
        self._stream.pix_fmt = "yuv420p"
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.time_base = 1 / self._rate
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        """One frame (or a stack [N, H, W, 3])."""
        if rgb.ndim == 4:
            for frame in rgb:
                self.add(frame)
            return
        h, w = rgb.shape[:2]
        if (h, w) != (self.height, self.width):
            padded = np.zeros((self.height, self.width, 3), np.uint8)
            padded[:h, :w] = rgb[: self.height, : self.width]
            rgb = padded
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, np.uint8), format="rgb24")
        frame.pts = self.frames
        self.frames += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the file (an unclosed MP4 has no index and won't play)."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_mp4(path: str | Path, frames: list[np.ndarray] | np.ndarray, fps: float) -> Path:
    """All ``frames`` as one H.264 MP4 at ``fps``."""
    height, width = frames[0].shape[:2]
    with Mp4Writer(path, fps, height, width) as writer:
        for frame in frames:
            writer.add(frame)
    return Path(path)


def read_mp4(path: str | Path) -> tuple[list[np.ndarray], float]:
    """Every frame of an MP4 as RGB arrays, and its frame rate."""
    import av

    with av.open(str(path), "r") as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)], fps


def iter_mp4(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of an MP4 one by one (a long video need not fit in memory)."""
    import av

    with av.open(str(path), "r") as container:
        for frame in container.decode(container.streams.video[0]):
            yield frame.to_ndarray(format="rgb24")


@lru_cache(maxsize=8)
def font(size: int = 13, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size`` px from matplotlib's data folder (Pillow's bitmap font if absent)."""
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:  # a stripped matplotlib install: still legible, only smaller
        return ImageFont.load_default()
