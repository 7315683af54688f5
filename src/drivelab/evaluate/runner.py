"""Closed-loop evaluation: drive N tracks in worker processes and measure the driving.

Track seeds are S, S+1, ...; each worker builds its own env and driver once, and the table
is keyed by seed, so results do not depend on the worker count. A crash inside one episode is
reported and marked failed while the others go on; Ctrl-C keeps what has finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivelab.errors import DrivelabError
from drivelab.evaluate.drivers import Driver, DriverSpec, build_driver
from drivelab.evaluate.metrics import (
    EpisodeResult,
    EpisodeTracker,
    aggregate,
    failed_episode,
    finish_episode,
)
from drivelab.evaluate.video import OverlayVideo
from drivelab.seeds import DEFAULT_ENV
from drivelab.sim import DrivingEnv, make_env
from drivelab.workers import WorkersDied, run_jobs


def _telemetry_value(obs_telemetry: dict[str, np.ndarray], name: str) -> float | None:
    value = obs_telemetry.get(name)
    return None if value is None else float(np.asarray(value).reshape(-1)[0])


def drive_and_measure(
    env: DrivingEnv,
    driver: Driver,
    seed: int,
    max_steps: int,
    video: OverlayVideo | None = None,
    report: Callable[[int], None] | None = None,
) -> EpisodeResult:
    """Drive one track with ``driver`` and return its metrics row."""
    obs = env.reset(seed=seed)
    driver.reset(seed)
    tracker = EpisodeTracker(fps=env.fps)
    info: dict[str, Any] = {}
    outcome = None
    names = [s.name for s in env.action_specs]
    for step in range(max_steps):
        action = np.asarray(driver.act(obs, env), np.float32)
        if video is not None:
            controls = dict(zip(names, action.tolist(), strict=False))
            side = driver.side_image(obs.frame) if hasattr(driver, "side_image") else None
            command = getattr(env, "command", None)  # the traffic world's route command label
            video.add(obs.frame, controls.get("steering", 0.0), controls.get("accel_brake", 0.0),
                      _telemetry_value(obs.telemetry, "speed"), side=side,
                      command=command if isinstance(command, str) else None,
                      side_label=driver.side_label() if side is not None else None)
        result = env.step(action)
        info = result.info
        obs = result.observation
        tracker.update(result.reward, info, _telemetry_value(obs.telemetry, "speed"),
                       result.infractions)
        outcome = result.outcome
        if report is not None and step % 50 == 49:
            report(50)
        if result.done:
            break
    progress = _telemetry_value(obs.telemetry, "progress")
    completion = float("nan") if progress is None else progress
    return finish_episode(seed, tracker, info, completion, outcome)


def video_path(video_dir: str | Path, driver: DriverSpec, seed: int) -> Path:
    """Where the video of ``driver`` on track ``seed`` goes: known before driving, so checkable."""
    label = driver.label.replace("/", "_").replace("@", "_at_")
    return Path(video_dir) / f"{label}_track{seed}.mp4"


def driving_video(env: DrivingEnv, caption: str) -> OverlayVideo:
    """An overlay video sized to ``env``: its speed range, its own dashboard rows cut."""
    speed = next((s for s in env.telemetry_specs if s.name == "speed"), None)
    top = speed.high if speed is not None and speed.high else 100.0
    return OverlayVideo(env.fps, max_speed=top, caption=caption,
                        crop_bottom=int(getattr(env, "dashboard_rows", 0)))


@dataclass
class EvalJob:
    """The worker side of `evaluate`."""

    env: str
    driver: DriverSpec
    max_steps: int
    video_dir: str | None = None
    replace_videos: bool = False  # --force: the caller checked the names before driving

    def open(self) -> None:
        # one intra-op thread per worker: the workers already fill the cores, and a batch-1
        # forward gains nothing from more threads but contention
        torch.set_num_threads(1)
        self._env = make_env(self.env, max_steps=self.max_steps)
        self._driver = build_driver(self.driver, self._env)

    def run(self, task: int, report: Callable[[int], None]) -> dict[str, Any]:
        # a policy's name carries its checkpoint's batch (run@batch), the baselines theirs
        caption = f"{getattr(self._driver, 'name', self.driver.label)} · track {task}"
        video = driving_video(self._env, caption) if self.video_dir else None
        row = drive_and_measure(self._env, self._driver, task, self.max_steps, video, report)
        out = row.to_dict()
        if video is not None and len(video):
            target = video_path(self.video_dir, self.driver, task)
            out["video"] = str(video.save(target, force=self.replace_videos))
        return out

    def close(self) -> None:
        if hasattr(self, "_env"):
            self._env.close()


@dataclass
class EvalReport:
    driver: str
    env: str
    seeds: list[int]
    rows: list[EpisodeResult]
    aggregate: dict[str, Any]
    seconds: float
    interrupted: bool = False
    videos: list[str] = field(default_factory=list)
    #: the step cap every episode ran under: a lap or route cut by it scores only its completion
    max_steps: int | None = None

    @property
    def capped(self) -> int:
        """Episodes the step cap ended (not a lap, an outcome, or the env's own end)."""
        return sum(1 for r in self.rows if self.max_steps is not None and r.steps >= self.max_steps
                   and r.lap_time_s is None and r.outcome is None and not r.failed)

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.aggregate["failed"] == 0 and len(self.rows) == len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "driver": self.driver,
            "env": self.env,
            "seeds": self.seeds,
            "episodes": [r.to_dict() for r in self.rows],
            "aggregate": self.aggregate,
            "seconds": round(self.seconds, 2),
            "interrupted": self.interrupted,
            "videos": self.videos,
            "max_steps": self.max_steps,
            "capped_episodes": self.capped,
        }


def evaluate(
    driver: DriverSpec,
    seeds: Sequence[int],
    env: str = DEFAULT_ENV,
    workers: int = 1,
    max_steps: int = 1000,
    video_dir: str | Path | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    replace_videos: bool = False,
) -> EvalReport:
    """Drive every track seed with ``driver``; rows are returned in seed order."""
    if not seeds:
        raise DrivelabError("--episodes must be at least 1")
    if workers < 1:
        raise DrivelabError(f"--workers must be at least 1 (got {workers})")
    if max_steps < 1:  # the simulator's own check would name its argument, not the flag
        raise DrivelabError(f"--max-steps must be at least 1 (got {max_steps})")
    probe = make_env(env, max_steps=max_steps)  # a bad env id or run fails here, in one line
    try:
        build_driver(driver, probe)
    finally:
        probe.close()
    rows: dict[int, EpisodeResult] = {}
    videos: list[str] = []

    def on_done(seed: int, raw: dict[str, Any]) -> None:
        video = raw.pop("video", None)
        if video:
            videos.append(video)
        rows[seed] = EpisodeResult(**raw)
        if on_episode:
            on_episode(rows[seed])

    errors: list[str] = []

    def on_error(seed: int, message: str, _trace: str) -> bool:
        if seed >= 0:
            rows[seed] = failed_episode(seed, message)
            if on_episode:
                on_episode(rows[seed])
        else:
            errors.append(message)
        return True

    started = time.perf_counter()
    interrupted = False
    job = EvalJob(env, driver, max_steps, str(video_dir) if video_dir else None, replace_videos)
    try:
        run_jobs(job, list(seeds), workers, on_progress, on_done, on_error)
    except KeyboardInterrupt:
        interrupted = True
    except WorkersDied as exc:
        if not rows:
            raise DrivelabError(f"evaluation workers died ({errors[0] if errors else exc})") from exc
        interrupted = True
    ordered = [rows[s] for s in seeds if s in rows]
    return EvalReport(
        driver=driver.label,
        env=env,
        seeds=list(seeds),
        rows=ordered,
        aggregate=aggregate(ordered),
        seconds=time.perf_counter() - started,
        interrupted=interrupted,
        videos=sorted(videos),
        max_steps=max_steps,
    )
