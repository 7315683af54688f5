"""Driving videos a person reads: the overlay's layout, MP4 round trips, the convcam heat map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivelab.evaluate.convcam import heat_map_over
from drivelab.evaluate.video import HEADER, PANEL_ROW, OverlayVideo
from drivelab.media import read_mp4, write_mp4


def _frame(height: int = 96) -> np.ndarray:
    frame = np.full((height, 96, 3), 100, np.uint8)
    frame[-12:] = 0  # a CarRacing-like dashboard in the last 12 rows
    return frame


def test_the_overlay_cuts_the_dashboard_and_labels_the_controls(tmp_path: Path) -> None:
    video = OverlayVideo(fps=50, every=1, max_speed=100, caption="run_v1@300 · track 10000", crop_bottom=12)
    video.add(_frame(), steering=0.5, accel_brake=-0.5, speed=50.0)
    video.add(_frame(), steering=-1.0, accel_brake=1.0, speed=None, command="left")
    first, second = video._frames
    # header, the frame without its 12 dashboard rows (x3), four labelled bars (+ command)
    assert first.size == (288, HEADER + 84 * 3 + 4 * PANEL_ROW + 6)
    assert second.size[1] == HEADER + 84 * 3 + 5 * PANEL_ROW + 6  # one more row: the command
    picture = np.asarray(first)
    assert not (picture[HEADER: HEADER + 84 * 3] == 0).all(axis=2).any()  # no black dashboard row left
    bar_rows = [HEADER + 84 * 3 + 4 + i * PANEL_ROW + 6 for i in range(4)]
    bars = picture[:, 71:228]  # between the labels and the values (bars span x 70..228)
    red = (bars[bar_rows[2], :, 0] > 200) & (bars[bar_rows[2], :, 1] < 120)  # brake: half full, red
    green = (bars[bar_rows[1], :, 1] > 180) & (bars[bar_rows[1], :, 0] < 120)  # throttle: empty
    assert 70 < red.sum() < 90 and green.sum() == 0


def test_mp4_round_trip_keeps_frames_rate_and_size(tmp_path: Path) -> None:
    frames = [np.full((35, 47, 3), 20 * i, np.uint8) for i in range(10)]  # odd sizes: padded
    path = write_mp4(tmp_path / "v.mp4", frames, fps=25)
    read, fps = read_mp4(path)
    assert len(read) == 10 and fps == 25 and read[0].shape == (36, 48, 3)
    assert abs(float(read[5][:35, :47].mean()) - 100) < 3  # H.264 is lossy, but not that lossy
    video = OverlayVideo(fps=50, every=2)
    for step in range(8):
        video.add(_frame(), steering=0.0, accel_brake=0.0, speed=1.0 * step)
    mp4, gif = video.save(tmp_path / "lap.mp4"), video.save(tmp_path / "lap.gif")
    assert len(read_mp4(mp4)[0]) == 4 and gif.read_bytes()[:6] == b"GIF89a"


def test_the_heat_map_lights_up_where_the_maps_fire() -> None:
    frame = np.full((96, 96, 3), 120, np.uint8)
    maps = np.zeros((8, 4, 4), np.float32)
    maps[:, 0, 0] = 5.0  # every channel fires in the top-left cell
    heat = heat_map_over(maps, frame)
    assert heat.shape == frame.shape and heat.dtype == np.uint8
    assert heat[:12, :12].astype(int).sum() > heat[-12:, -12:].astype(int).sum() + 10_000
    assert (heat_map_over(np.ones((8, 4, 4), np.float32), frame) == 120).all()  # nothing stands out


def test_a_small_frame_still_gets_a_readable_panel(tmp_path: Path) -> None:
    """A 32x32 traffic frame (x3 = 96 px) is narrower than the panel: the canvas widens."""
    video = OverlayVideo(fps=5, every=1)
    video.add(np.zeros((32, 32, 3), np.uint8), steering=0.2, accel_brake=0.5, speed=3.0, command="left")
    assert video._frames[0].size[0] == 288
    assert video.save(tmp_path / "small.mp4").stat().st_size > 0
