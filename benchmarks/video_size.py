"""Driving videos: the same overlay frames as H.264 MP4 (the default) and as a GIF (cards).

    python benchmarks/video_size.py [--steps 600] [--seed 10000] [--frame docs/media/overlay_frame.png]

The expert drives one held-out CarRacing track for ``--steps`` steps with the evaluation's
overlay (every 2nd step kept, as `drivelab eval --video` does); both files are written from the
same frames, with their sizes, the ratio and the encode times printed. ``--frame`` also saves
the middle frame as a PNG (the picture of the overlay in docs/).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from PIL import Image

from drivelab.evaluate.drivers import DriverSpec, build_driver
from drivelab.evaluate.runner import drive_and_measure, driving_video
from drivelab.models.specs_table import machine
from drivelab.sim import make_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=10000)
    parser.add_argument("--frame", type=Path, default=None)
    args = parser.parse_args()
    env = make_env("carracing", max_steps=args.steps)
    video = driving_video(env, f"expert · track {args.seed}")
    drive_and_measure(env, build_driver(DriverSpec("expert"), env), args.seed, args.steps, video)
    env.close()
    with tempfile.TemporaryDirectory() as folder:
        sizes, seconds = {}, {}
        for suffix in (".mp4", ".gif"):
            started = time.perf_counter()
            path = video.save(Path(folder) / f"lap{suffix}")
            seconds[suffix] = time.perf_counter() - started
            sizes[suffix] = path.stat().st_size
    print(f"CPU {machine()['cpu']}; {len(video)} frames of {video.frames().shape[2]}x{video.frames().shape[1]} "
          f"from {args.steps} steps")
    for suffix in sizes:
        print(f"{suffix[1:]}: {sizes[suffix] / 1e3:.0f} kB, encoded in {seconds[suffix]:.2f} s")
    print(f"gif / mp4 size: {sizes['.gif'] / sizes['.mp4']:.1f}x")
    if args.frame is not None:
        Image.fromarray(video.frames()[len(video) // 2]).save(args.frame)
        print(f"frame: {args.frame}")


if __name__ == "__main__":
    main()
