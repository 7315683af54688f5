"""Watch mode, the player: drive each new checkpoint of a run while it trains, and log the driving.

Started by the trainer (`drivelab.watch.launcher.WatchPlayer`; `drivelab.watch` describes the
cadence and the files) as ``python -m drivelab.watch.player RUN --every N ...``; it can be started by hand on a
run in training too. It lowers its own priority (``nice`` +10) and uses one torch thread, so the
trainer keeps the machine and the player uses what is left: on a 2-core machine one core's share
while it drives, nothing while it waits for the next checkpoint.

It polls ``RUN/checkpoints`` every ``--poll`` seconds and drives the due checkpoints in batch
order, each on the same track (``--seed``) for at most ``--steps`` steps, through the same
`PolicyRuntime`/`PolicyDriver` and `drive_and_measure` as ``drivelab eval``. A checkpoint whose
episode fails gets an error row and the player goes on with the next one. It exits once its
stdin says ``finish`` or closes (the trainer ended, or died) and every checkpoint written by then
is driven.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from drivelab.errors import DrivelabError
from drivelab.evaluate.runner import drive_and_measure, driving_video
from drivelab.evaluate.runtime import PolicyDriver, PolicyRuntime, StepRuntime
from drivelab.evaluate.video import OverlayVideo
from drivelab.runs.checkpoints import list_checkpoints
from drivelab.runs.folder import RunFolder
from drivelab.runs.metrics import WATCH_ROWS
from drivelab.sim import DrivingEnv, make_env
from drivelab.watch.spec import (
    PLAYER_LOG,
    WATCH_DIR,
    WATCH_TB,
    PlayerSpec,
    due_batches,
    read_watch_rows,
)

NICE = 10
#: TensorBoard keeps every video in its event file: the episode is shown with at most this many
#: frames (played at the real speed), the full one is the GIF beside it.
TB_VIDEO_FRAMES = 100


class CheckpointWatcher:
    """Drives the due checkpoints of one run, one episode each, and logs the results."""

    def __init__(self, spec: PlayerSpec) -> None:
        run = RunFolder.open(spec.run)
        self.run = run
        self.every = spec.every
        self.max_steps = max_steps = spec.max_steps
        self.seed = spec.seed
        self.env_name = env = spec.env
        self.period = spec.period
        self.after = after = spec.after
        self.last = spec.last
        self.folder = run.path / WATCH_DIR
        self.folder.mkdir(exist_ok=True)
        self.done = {int(r["batch"]) for r in read_watch_rows(run) if "batch" in r and r["batch"] > after}
        self._env: DrivingEnv | None = make_env(env, max_steps=max_steps)  # a bad env fails at once
        self.writer = SummaryWriter(str(run.tb / WATCH_TB))

    def pending(self) -> list[int]:
        due = due_batches(list_checkpoints(self.run.checkpoints), self.every, self.after, self.last)
        return [b for b in due if b not in self.done]

    def watch(self, batch: int, runtime: StepRuntime | None = None) -> dict[str, Any]:
        """Drive checkpoint ``batch`` once; log the row (or an error row) and return it.

        ``runtime``: the policy already in memory (the live player gets it from Ray's object
        store, `drivelab.live.player`); by default it is read from the checkpoint file.
        """
        started = time.perf_counter()
        try:
            row = self._drive(batch, runtime)
        except Exception as exc:  # one broken checkpoint or episode must not end the watching
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            row = {"watch/error": f"{type(exc).__name__}: {first}"[:300]}
            self._close_env()  # a fresh env for the next checkpoint
        row = {"batch": batch, "period": self.period, "time": round(time.time(), 3),
               "watch/seconds": round(time.perf_counter() - started, 2), **row}
        _append_row(self.run.path / WATCH_ROWS, row)
        self.done.add(batch)
        return row

    def _drive(self, batch: int, runtime: StepRuntime | None = None) -> dict[str, Any]:
        if self._env is None:
            self._env = make_env(self.env_name, max_steps=self.max_steps)
        env = self._env
        driver = PolicyDriver(runtime or PolicyRuntime.from_ref(f"{self.run.path}@{batch}"), env)
        video = driving_video(env, f"{self.run.path.name}@{batch} · track {self.seed}")
        result = drive_and_measure(env, driver, self.seed, self.max_steps, video)
        gif = self.folder / f"batch_{batch}.mp4"
        if len(video):
            video.save(gif, force=True)  # atomic: a killed player leaves no half video
        values = {
            "watch/score": result.score,
            "watch/reward": result.reward,
            "watch/completion": result.completion,
            "watch/off_track_events": float(result.off_track_events),
            "watch/unstuck": float(result.unstuck),
        }
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=batch)
        if len(video):
            self._add_video(video, batch)
        self.writer.flush()  # TensorBoard first: the jsonl row is the "watched" marker
        row: dict[str, Any] = {k: v if math.isfinite(v) else str(v) for k, v in values.items()}
        if result.outcome is not None:  # a route world (traffic): how the episode ended
            row["watch/outcome"] = result.outcome
        row.update({"watch/steps": result.steps, "watch/seed": self.seed,
                    "watch/video": str(gif.relative_to(self.run.path)) if len(video) else None})
        return row

    def _add_video(self, video: OverlayVideo, batch: int) -> None:
        """An animated GIF as a TensorBoard image, as ``add_video`` writes it, without moviepy."""
        frames = video.frames()
        stride = max(1, math.ceil(len(frames) / TB_VIDEO_FRAMES))
        shown = frames[::stride]
        duration = round(1000 * video.every * stride / video.fps)
        encoded = gif_bytes(shown, duration)
        image = Summary.Image(height=int(shown.shape[1]), width=int(shown.shape[2]), colorspace=3,
                              encoded_image_string=encoded)
        summary = Summary(value=[Summary.Value(tag="watch/video", image=image)])
        # SummaryWriter.add_video does exactly this once moviepy has made the GIF.
        self.writer._get_file_writer().add_summary(summary, global_step=batch)

    def _close_env(self) -> None:
        if self._env is not None:
            with contextlib.suppress(Exception):  # already broken: a new one is made
                self._env.close()
            self._env = None

    def close(self) -> None:
        self._close_env()
        self.writer.close()


def gif_bytes(frames: np.ndarray, duration_ms: int) -> bytes:
    """[N, H, W, 3] uint8 -> an animated, looping GIF."""
    images = [Image.fromarray(f).convert("P", palette=Image.ADAPTIVE, colors=128) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(duration_ms, 20), loop=0)
    return buffer.getvalue()


def _append_row(path: Path, row: dict[str, Any]) -> None:
    """One ``write`` on an O_APPEND descriptor: a reader sees whole lines only (or a torn tail
    from a killed player, which `read_watch_rows` skips)."""
    data = (json.dumps(row) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class FinishSignal:
    """Reads the trainer's word on stdin: ``finish`` or end-of-file both mean "wrap up"."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno() if sys.stdin is not None else None
        self.finishing = self.fd is None

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` unless the trainer speaks; True once it said finish."""
        if self.finishing or self.fd is None:
            return True
        readable, _, _ = select.select([self.fd], [], [], seconds)
        if readable:
            data = os.read(self.fd, 4096)
            if not data or b"finish" in data:
                self.finishing = True
        return self.finishing


def play(watcher: CheckpointWatcher, signal: FinishSignal, poll_s: float) -> None:
    """Drive checkpoints as they appear until told to finish, then drive the rest and return."""
    while True:
        # Read the finish word before listing: every checkpoint written before it is then seen.
        finishing = signal.wait(0)
        for batch in watcher.pending():
            row = watcher.watch(batch)
            shown = row.get("watch/error") or (
                f"score {row['watch/score']} reward {row['watch/reward']} "
                f"completion {row['watch/completion']} in {row['watch/seconds']} s"
            )
            print(f"batch {batch}: {shown}", flush=True)
        if finishing:
            return
        signal.wait(poll_s)


def main(argv: list[str] | None = None) -> int:
    args = PlayerSpec.from_argv(argv, prog=f"python -m {__name__}", description=__doc__.splitlines()[0])
    with contextlib.suppress(OSError):  # not allowed here: the one thread still bounds its share
        os.nice(NICE)
    torch.set_num_threads(1)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    print(f"watching {args.run} every {args.every} batches (track {args.seed}, {args.max_steps} steps, "
          f"pid {os.getpid()}, log {WATCH_DIR}/{PLAYER_LOG})", flush=True)
    try:
        watcher = CheckpointWatcher(args)
    except Exception as exc:  # one line for the trainer's report, not a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        kind = "" if isinstance(exc, DrivelabError) else f"{type(exc).__name__}: "
        print(f"error: cannot watch: {kind}{first}", flush=True)
        return 1
    try:
        play(watcher, FinishSignal(), args.poll_s)
    finally:
        watcher.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
