"""Expert data collection: worker processes drive, record and commit episodes in parallel.

Episode ``i`` of a dataset always drives track seed ``seed + i`` with noise drawn from
``rng([seed, i])``, so the data depends only on the seed and the episode index — not on how many
workers there are or which one drove it. Workers commit their own episodes (see `store`); the
parent process alone writes the dataset's root attributes, holding the store's writer lock so two
collectors never append to one dataset at once (and `data verify --remove-leftovers` keeps off).
Every flag is checked before anything is created, so a refused collect leaves no folder behind.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from drivelab.data.episode_writer import write_episode
from drivelab.data.locks import check_creatable, writer_lock
from drivelab.data.recorder import ActionNoise, EpisodeRecorder
from drivelab.data.records import DatasetError, DatasetMeta, EpisodeRecord
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError, Interrupted
from drivelab.sim import DrivingEnv, Observation, canonical_env, make_env, make_expert
from drivelab.workers import WorkersDied, run_jobs

#: How long a DART perturbation lasts by default: long enough to push the car off its line.
NOISE_HOLD_S = 0.2


def noise_hold_steps(hold: int | None, fps: float) -> int:
    """A perturbation's length in steps: ``hold`` if given, else `NOISE_HOLD_S` at ``fps``."""
    return hold if hold is not None else max(1, round(NOISE_HOLD_S * fps))


@dataclass(frozen=True)
class CollectPlan:
    """Everything a worker needs to drive an episode; picklable for spawned processes."""

    env: str
    seed: int
    noise: float = 0.0
    #: Steps a perturbation is held; None: `NOISE_HOLD_S` of the env's steps (10 at CarRacing's
    #: 50 fps, 1 at the traffic world's 5 decisions/s, where 10 steps were 2 s and crashed it).
    noise_hold: int | None = None
    max_steps: int = 1000


@dataclass(frozen=True)
class CollectSummary:
    path: Path
    indices: list[int]
    frames: int
    seconds: float
    episode_rows: list[dict[str, Any]]

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def track_seed(plan: CollectPlan, index: int) -> int:
    return plan.seed + index


class Steering(Protocol):
    """Who executes each step when the expert is not the only driver (DAgger, `drivelab.live`).

    The expert is asked at every step and its action is always the recorded label; a steering
    picks the action that is executed instead (before DART noise), sees what was executed, and
    adds its own episode attrs. Without one, `drive_episode` is plain expert collection.
    """

    def reset(self, seed: int) -> None: ...

    def choose(self, obs: Observation, env: DrivingEnv, label: np.ndarray) -> np.ndarray: ...

    def executed(self, action: np.ndarray) -> None: ...

    def info(self) -> dict[str, Any]: ...


def drive_episode(
    env: DrivingEnv,
    plan: CollectPlan,
    index: int,
    expert: Any,
    on_steps: Callable[[int], None] | None = None,
    steering: Steering | None = None,
) -> EpisodeRecord:
    """Drive one episode on its track, labelled by the expert, and return the `EpisodeRecord`.

    ``perturbed`` marks every step whose executed action is not the label (DART noise, or the
    steering's choice when it differs from the expert's).
    """
    rng = np.random.default_rng([plan.seed, index])
    low = np.array([s.low if s.low is not None else -1.0 for s in env.action_specs], np.float32)
    high = np.array([s.high if s.high is not None else 1.0 for s in env.action_specs], np.float32)
    hold = noise_hold_steps(plan.noise_hold, env.fps)
    noise = ActionNoise(plan.noise, rng, low, high, sigma=(high - low) * 0.1, hold=hold)
    recorder = EpisodeRecorder(
        env.frame_shape, env.telemetry_specs, env.action_specs, capacity=plan.max_steps
    )
    seed = track_seed(plan, index)
    started = time.perf_counter()
    obs = env.reset(seed=seed)
    expert.reset()
    if steering is not None:
        steering.reset(seed)
    ret, info = 0.0, {}
    reported = perturbed_steps = 0
    for _ in range(plan.max_steps):
        intended = np.asarray(expert.act(env), np.float32)
        chosen = intended if steering is None else np.asarray(steering.choose(obs, env, intended), np.float32)
        executed, perturbed = noise.apply(chosen)
        if steering is not None:
            steering.executed(executed)
            perturbed = perturbed or not np.array_equal(chosen, intended)
        result = env.step(executed)
        recorder.add(obs, intended, perturbed, result.reward)
        perturbed_steps += perturbed
        ret += result.reward
        info = result.info
        obs = result.observation
        if on_steps is not None and len(recorder) - reported >= 50:
            on_steps(len(recorder) - reported)
            reported = len(recorder)
        if result.done:
            break
    if on_steps is not None and len(recorder) > reported:
        on_steps(len(recorder) - reported)
    seconds = time.perf_counter() - started
    if "progress" in obs.telemetry:  # the track fraction reached, after the last step
        info = {**info, "progress": float(obs.telemetry["progress"][0])}
    return recorder.finish(
        {
            "env_id": env.env_id,
            "track_seed": seed,
            "return": round(ret, 4),
            "noise": plan.noise,
            "perturbed_steps": perturbed_steps,
            "seconds": round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **{k: _plain(v) for k, v in info.items() if _plain(v) is not None},
            **(steering.info() if steering is not None else {}),
        }
    )


def _plain(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return None


@dataclass
class CollectJob:
    """The worker side of `collect`: drive the episode numbered ``task`` and commit it."""

    path: str
    plan: CollectPlan

    def open(self) -> None:
        self._env = make_env(self.plan.env, max_steps=self.plan.max_steps)
        self._expert = make_expert(self._env)
        self._store = DatasetStore.open(self.path)

    def run(self, task: int, report: Callable[[int], None]) -> dict[str, Any]:
        record = drive_episode(self._env, self.plan, task, self._expert, on_steps=report)
        return write_episode(self._store, task, record).attrs

    def close(self) -> None:
        if hasattr(self, "_env"):
            self._env.close()


def check_collect_flags(
    plan: CollectPlan,
    episodes: int,
    workers: int,
    val_episodes: int,
    test_episodes: int,
    chunk_frames: int,
) -> None:
    """Refuse a bad flag in one line, before any env starts or any folder is made.

    A value a worker would only trip over later (a negative seed fails in its random generator)
    would otherwise leave an empty dataset behind, and the rerun would be refused as existing.
    """
    if episodes < 1:
        raise DrivelabError(f"--episodes must be at least 1 (got {episodes})")
    if workers < 1:
        raise DrivelabError(f"--workers must be at least 1 (got {workers})")
    if val_episodes < 0 or test_episodes < 0 or val_episodes + test_episodes > episodes:
        raise DrivelabError(
            f"--val-episodes ({val_episodes}) + --test-episodes ({test_episodes}) must be "
            f"between 0 and --episodes ({episodes})"
        )
    if plan.seed < 0:
        raise DrivelabError(f"--seed must be 0 or more (got {plan.seed}): track seeds are SEED+i")
    if not 0.0 <= plan.noise <= 1.0:
        raise DrivelabError(f"--noise is a probability in [0, 1] (got {plan.noise})")
    if plan.noise_hold is not None and plan.noise_hold < 1:
        raise DrivelabError(f"--noise-hold must be at least 1 step (got {plan.noise_hold})")
    if plan.max_steps < 1:
        raise DrivelabError(f"--max-steps must be at least 1 (got {plan.max_steps})")
    if chunk_frames < 1:
        raise DrivelabError(f"--chunk-frames must be at least 1 (got {chunk_frames})")
    if not plan.env.strip():
        raise DrivelabError("--env is empty: use `carracing` or a gymnasium id with image frames")


def open_for_collection(path: Path, env: DrivingEnv, append: bool, chunk_frames: int,
                        name: str | None = None) -> DatasetStore:
    """A new dataset, or an existing one checked to hold the same env and signals.

    ``name`` is the env name ``env`` was built from; a new dataset records it (options
    included, see `canonical_env`) so a run trained on it drives in the same world later.
    """
    if not append:
        meta = DatasetMeta(
            env_id=env.env_id,
            env=canonical_env(name) if name is not None else None,
            fps=env.fps,
            frame_shape=tuple(env.frame_shape),  # type: ignore[arg-type]
            telemetry=tuple(env.telemetry_specs),
            actions=tuple(env.action_specs),
            chunk_frames=chunk_frames,
        )
        return DatasetStore.create(path, meta)
    if not path.exists():
        raise DatasetError(f"--append given but {path} does not exist: drop --append to create it")
    store = DatasetStore.open(path)
    meta = store.meta
    if meta.env_id != env.env_id or tuple(meta.frame_shape) != tuple(env.frame_shape):
        raise DatasetError(
            f"{path} holds {meta.env_id} frames {list(meta.frame_shape)}, not {env.env_id} "
            f"{list(env.frame_shape)}: append only the same env, or use a new --out"
        )
    if meta.signal_names()["actions"] != [s.name for s in env.action_specs]:
        raise DatasetError(f"{path} has other action names than {env.env_id}: use a new --out")
    return store


def collect(
    out: str | Path,
    plan: CollectPlan,
    episodes: int,
    workers: int = 1,
    val_episodes: int = 0,
    test_episodes: int = 0,
    append: bool = False,
    chunk_frames: int = 32,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> CollectSummary:
    """Record ``episodes`` expert episodes into the dataset at ``out``.

    The last ``test_episodes`` of this call go to the test split and the ``val_episodes`` before
    them to val (like the seeds' ``--val_len 1 --test_len 1``). ``on_progress(frames_delta,
    episodes_done, episodes_total)`` drives a progress bar.
    """
    check_collect_flags(plan, episodes, workers, val_episodes, test_episodes, chunk_frames)
    path = Path(out)
    if not append:
        check_creatable(path)  # before the env starts: a taken or impossible --out costs nothing
    elif not path.exists():
        raise DatasetError(f"--append given but {path} does not exist: drop --append to create it")
    probe = make_env(plan.env, max_steps=plan.max_steps)  # fails fast on a bad env id
    try:
        make_expert(probe)
        store = open_for_collection(path, probe, append, chunk_frames, name=plan.env)
    finally:
        probe.close()

    with writer_lock(path, "wait for it to finish"):
        # Read-modify-write of the root attrs happens only under the lock, from what is on disk
        # now: another appender may have committed episodes and splits since `open` above.
        store.reload_attrs()
        start = store.next_index()
        indices = list(range(start, start + episodes))
        n_test = test_episodes
        test = indices[len(indices) - n_test :] if n_test else []
        val = indices[len(indices) - n_test - val_episodes : len(indices) - n_test]
        rows: dict[int, dict[str, Any]] = {}

        def on_steps(n: int) -> None:
            if on_progress:
                on_progress(n, len(rows), episodes)

        def on_done(index: int, attrs: dict[str, Any]) -> None:
            rows[index] = attrs
            store.assign_splits(val=[index] if index in val else [], test=[index] if index in test else [])
            if on_progress:
                on_progress(0, len(rows), episodes)

        failure: list[str] = []

        def on_error(index: int, message: str, _trace: str) -> bool:
            failure.append(f"episode {index} failed in a worker ({message})" if index >= 0
                           else f"a collection worker could not start ({message})")
            return False

        started = time.perf_counter()
        try:
            run_jobs(CollectJob(str(path), plan), indices, workers, on_steps, on_done, on_error)
        except WorkersDied as exc:
            failure.append(str(exc))
        except KeyboardInterrupt:
            _refresh_cached_stats(store)
            raise Interrupted(
                f"{len(rows)} of {episodes} episodes committed to {path} (episodes being recorded "
                f"were discarded); add more with `drivelab collect --append --out {path}`"
            ) from None
        if failure:
            if not append and not store.episodes():
                # Ours, made by this call and empty: keeping it would only make the rerun fail
                # with "already exists".
                shutil.rmtree(path, ignore_errors=True)
                raise DrivelabError(f"{failure[0]}; no episode was committed, so {path} was removed")
            _refresh_cached_stats(store)
            raise DrivelabError(f"{failure[0]}; the episodes committed so far are kept in {path}")
        seconds = time.perf_counter() - started
        _refresh_cached_stats(store)
    return CollectSummary(
        path=path,
        indices=indices,
        frames=sum(int(r["length"]) for r in rows.values()),
        seconds=seconds,
        episode_rows=[{"index": i, **rows[i]} for i in sorted(rows)],
    )


def _refresh_cached_stats(store: DatasetStore) -> None:
    """Cache the merged statistics in the root attrs, for readers that want them without a scan."""
    moments = store.moments()
    store.update_attrs(
        stats={k: m.summary() for k, m in moments.items()},
        episodes=len(store.episodes()),
    )
