"""Driving videos with an overlay a person reads: who drives, where, when, and with which controls.

Each kept step becomes one picture: a header line (driver, track seed, step and time, and the
checkpoint's batch in the driver's label), the frame upscaled with nearest-neighbour so 96x96
pixels stay sharp, an optional side image (the convcam heat map), and a panel of labelled bars
for steering (centred), throttle, brake and speed (with its value in m/s), plus the route
command in the traffic world. Text is a real font (`drivelab.media.font`).

CarRacing draws its own dashboard (speed, ABS, steering and gyro bars) into the bottom rows of
the frame; the panel shows the same controls labelled, so those rows are cut (``crop_bottom``).

Saved as H.264 MP4 by default (8x smaller than a GIF of the same frames and plays everywhere)
or as a GIF when the path ends in ``.gif`` (model cards embed GIFs; TensorBoard takes frames).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from drivelab.media import font, write_mp4
from drivelab.outputs import atomic_output

#: Video formats by file suffix
FORMATS = (".mp4", ".gif")
HEADER = 20
PANEL_ROW = 16
MIN_WIDTH = 288  # px: the panel's labels, bars and values
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
MUTED = (150, 150, 150)


class OverlayVideo:
    """Collects annotated frames (every ``every``-th step) and writes them as an MP4 or a GIF."""

    def __init__(self, fps: float, scale: int = 3, every: int = 2, max_speed: float = 100.0,
                 caption: str = "", crop_bottom: int = 0) -> None:
        self.fps = fps
        self.scale = scale
        self.every = every
        self.max_speed = max_speed
        self.caption = caption
        self.crop_bottom = crop_bottom
        self._frames: list[Image.Image] = []
        self._step = 0

    def add(
        self,
        frame: np.ndarray,
        steering: float,
        accel_brake: float,
        speed: float | None,
        side: np.ndarray | None = None,
        command: str | None = None,
        side_label: str | None = None,
    ) -> None:
        """One step; ``side`` (uint8 HxWx3) is drawn right of the frame (e.g. the convcam), with
        ``side_label`` written on it; a side image of the frame's height loses the same rows."""
        self._step += 1
        if (self._step - 1) % self.every:
            return
        if self.crop_bottom and frame.shape[0] > self.crop_bottom:
            if side is not None and side.shape[0] == frame.shape[0]:
                side = side[: side.shape[0] - self.crop_bottom]
            frame = frame[: frame.shape[0] - self.crop_bottom]
        h, w = frame.shape[:2]
        s = self.scale
        side_w = 0 if side is None else side.shape[1] * s * h // side.shape[0]
        rows = 4 + (command is not None)
        width = max(w * s + side_w, MIN_WIDTH)  # a 32-px frame still gets a readable panel
        panel = rows * PANEL_ROW + 6
        canvas = Image.new("RGB", (width + width % 2, HEADER + h * s + panel + (h * s + panel) % 2), BACKGROUND)
        canvas.paste(Image.fromarray(frame).resize((w * s, h * s), Image.NEAREST), (0, HEADER))
        if side is not None:
            canvas.paste(Image.fromarray(side).resize((side_w, h * s), Image.NEAREST), (w * s, HEADER))
        draw = ImageDraw.Draw(canvas)
        if side is not None and side_label:
            draw.text((w * s + 4, HEADER + 3), side_label, fill=TEXT, font=font(11),
                      stroke_width=2, stroke_fill=BACKGROUND)
        seconds = (self._step - 1) / self.fps
        header = f"step {self._step - 1}  {seconds:5.1f} s"
        draw.text((4, 3), self.caption, fill=TEXT, font=font(12))
        draw.text((width - 4, 3), header, fill=MUTED, font=font(12), anchor="ra")
        y = HEADER + h * s + 4
        bar = (70, min(width, 400) - 130)  # x, width of the bars: label left, value right
        lines = [
            ("steering", steering, "centre", (90, 170, 250), f"{steering:+.2f}"),
            ("throttle", max(accel_brake, 0.0), "left", (80, 200, 90), f"{max(accel_brake, 0.0):.2f}"),
            ("brake", max(-accel_brake, 0.0), "left", (230, 80, 70), f"{max(-accel_brake, 0.0):.2f}"),
            ("speed", None if speed is None else speed / self.max_speed, "left", (200, 200, 120),
             "–" if speed is None else f"{speed:.1f} m/s"),
        ]
        for label, value, origin, colour, text in lines:
            draw.text((4, y), label, fill=MUTED, font=font(11))
            if value is not None:
                _bar(draw, bar[0], y + 3, bar[1], value, colour, origin)
            draw.text((bar[0] + bar[1] + 8, y), text, fill=TEXT, font=font(11))
            y += PANEL_ROW
        if command is not None:
            draw.text((4, y), "command", fill=MUTED, font=font(11))
            draw.text((bar[0], y), command, fill=TEXT, font=font(11, bold=True))
        self._frames.append(canvas)

    def __len__(self) -> int:
        return len(self._frames)

    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write the video atomically (MP4, or GIF by suffix); an existing file is replaced only with ``force``."""
        path = Path(path)
        if not self._frames:
            raise ValueError("no frames to write")
        with atomic_output(path, force=force, flag="--video") as tmp:
            if path.suffix == ".gif":
                duration = round(1000 * self.every / self.fps)
                first, *rest = [f.convert("P", palette=Image.ADAPTIVE, colors=128) for f in self._frames]
                first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=duration, loop=0,
                           optimize=False)
            else:
                write_mp4(tmp, [np.asarray(f) for f in self._frames], self.fps / self.every)
        return path

    def frames(self) -> np.ndarray:
        """[N, H, W, 3] uint8, for TensorBoard."""
        return np.stack([np.asarray(f) for f in self._frames])


def _bar(draw: ImageDraw.ImageDraw, x: int, y: int, width: int, value: float, colour: tuple,
         origin: str) -> None:
    """A bar from the centre (-1 fills left, +1 right) or from the left edge (0..1)."""
    draw.rectangle((x, y, x + width, y + 8), outline=(90, 90, 90))
    value = max(-1.0, min(1.0, value))
    start = x + width // 2 if origin == "centre" else x
    span = width // 2 if origin == "centre" else width
    end = start + int(value * span)
    if end != start:
        draw.rectangle((min(start, end), y + 1, max(start, end), y + 7), fill=colour)
    if origin == "centre":
        draw.line((start, y - 1, start, y + 9), fill=MUTED)
