"""Driving videos with an overlay of the controls, the way one watches a model drive.

GIFs through Pillow: no codec to install, they play in browsers, in Markdown model cards and in
TensorBoard-free reviews. Frames are upscaled with nearest-neighbour so 96x96 pixels stay sharp,
and a strip below shows steering, accel/brake (green throttle, red brake) and speed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from drivelab.outputs import atomic_output

STRIP = 34


class OverlayVideo:
    """Collects annotated frames (every ``every``-th step) and writes them as a GIF."""

    def __init__(self, fps: float, scale: int = 3, every: int = 2, max_speed: float = 100.0) -> None:
        self.fps = fps
        self.scale = scale
        self.every = every
        self.max_speed = max_speed
        self._frames: list[Image.Image] = []
        self._step = 0

    def add(
        self,
        frame: np.ndarray,
        steering: float,
        accel_brake: float,
        speed: float | None,
        side: np.ndarray | None = None,
    ) -> None:
        """One step; ``side`` (uint8 HxWx3) is drawn right of the frame (e.g. the convcam)."""
        self._step += 1
        if (self._step - 1) % self.every:
            return
        h, w = frame.shape[:2]
        s = self.scale
        side_w = 0 if side is None else side.shape[1] * s * h // side.shape[0]
        canvas = Image.new("RGB", (w * s + side_w, h * s + STRIP), (24, 24, 24))
        canvas.paste(Image.fromarray(frame).resize((w * s, h * s), Image.NEAREST), (0, 0))
        if side is not None:
            canvas.paste(Image.fromarray(side).resize((side_w, h * s), Image.NEAREST), (w * s, 0))
        draw = ImageDraw.Draw(canvas)
        y0, width = h * s + 4, w * s
        _bar(draw, 4, y0, width - 8, steering, (90, 170, 250))
        ab_colour = (80, 200, 90) if accel_brake >= 0 else (230, 80, 70)
        _bar(draw, 4, y0 + 10, width - 8, accel_brake, ab_colour)
        text = f"steer {steering:+.2f}  acc/brk {accel_brake:+.2f}"
        if speed is not None:
            text += f"  {speed:5.1f} m/s"
        draw.text((4, y0 + 18), text, fill=(230, 230, 230))
        self._frames.append(canvas)

    def __len__(self) -> int:
        return len(self._frames)

    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write the GIF atomically; an existing file is replaced only with ``force``."""
        path = Path(path)
        if not self._frames:
            raise ValueError("no frames to write")
        duration = round(1000 * self.every / self.fps)
        first, *rest = [f.convert("P", palette=Image.ADAPTIVE, colors=128) for f in self._frames]
        with atomic_output(path, force=force, flag="--video") as tmp:
            first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=duration, loop=0,
                       optimize=False)
        return path

    def frames(self) -> np.ndarray:
        """[N, H, W, 3] uint8, for TensorBoard."""
        return np.stack([np.asarray(f) for f in self._frames])


def _bar(draw: ImageDraw.ImageDraw, x: int, y: int, width: int, value: float, colour: tuple) -> None:
    """A centred bar: value -1 fills left, +1 fills right."""
    mid = x + width // 2
    draw.rectangle((x, y, x + width, y + 6), outline=(90, 90, 90))
    end = mid + int(max(-1.0, min(1.0, value)) * (width // 2))
    draw.rectangle((min(mid, end), y + 1, max(mid, end), y + 5), fill=colour)
