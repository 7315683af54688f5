"""A collector: drive one episode with the expert or a β-mixture, label it with the expert, commit it.

DAgger's rule (Ross, Gordon & Bagnell 2011) is that the teacher labels every state the student
visits: at every step the privileged expert is asked for its action, which is the recorded label,
and then either it or the current policy (per `beta.ExecutorDraw`) executes. The executed action
and who executed it are kept in the episode's attrs (``live_executed``, ``live_executor``: ``e``
or ``p`` per step), with the policy version and β that drove it. The recorder's ``perturbed``
flag marks every step whose executed action is not the label (DART noise or the policy).

Episodes are committed through `drivelab.data.episode_writer` (staging -> rename -> marker); the
index is taken under the dataset's writer lock, so the stored order is the commit order and the
trainer's "first E episodes" is exactly "what was committed by then". A collector killed
mid-episode has written nothing (the record is in memory), or at worst a staging leftover that
readers never see.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivelab.config.live_section import LiveConfig
from drivelab.data.episode_writer import write_episode
from drivelab.data.locks import writer_lock
from drivelab.data.recorder import ActionNoise, EpisodeRecorder
from drivelab.data.records import DatasetBusy, EpisodeInfo, EpisodeRecord
from drivelab.data.store import DatasetStore
from drivelab.evaluate.runtime import PolicyDriver, PolicyRuntime
from drivelab.live.beta import ExecutorDraw
from drivelab.live.weights import PolicyVersion, RuntimeCache
from drivelab.sim import DrivingEnv, make_env, make_expert

#: How long a collector waits for another one's commit before trying the writer lock again.
LOCK_RETRY_S = 0.02


@dataclass(frozen=True)
class EpisodeOrder:
    """What the driver asks of a collector: the slot (track seed = live.seed + slot), β, version."""

    slot: int
    beta: float
    round_index: int


def drive_mixed_episode(
    env: DrivingEnv, expert: Any, runtime: PolicyRuntime | None, live: LiveConfig, order: EpisodeOrder,
    version: int,
) -> EpisodeRecord:
    """One episode on track ``live.seed + slot``; labels from the expert, actions from the mixture."""
    rng = np.random.default_rng([live.seed, order.slot])
    beta = order.beta if runtime is not None else 1.0
    draw = ExecutorDraw(beta, live.beta.per, rng)
    low = np.array([s.low if s.low is not None else -1.0 for s in env.action_specs], np.float32)
    high = np.array([s.high if s.high is not None else 1.0 for s in env.action_specs], np.float32)
    noise = ActionNoise(live.noise, rng, low, high, sigma=(high - low) * 0.1, hold=live.noise_hold)
    recorder = EpisodeRecorder(env.frame_shape, env.telemetry_specs, env.action_specs, capacity=live.max_steps)
    driver = PolicyDriver(runtime, env) if runtime is not None else None
    seed = live.seed + order.slot
    started = time.perf_counter()
    obs = env.reset(seed=seed)
    expert.reset()
    if driver is not None:
        driver.reset(seed)
    executed_rows: list[list[float]] = []
    executor: list[str] = []
    ret, info = 0.0, {}
    for _ in range(live.max_steps):
        label = np.asarray(expert.act(env), np.float32)
        expert_turn = driver is None or draw.expert_executes()
        # the policy observes every frame, so its frame stack / history are right when it drives
        chosen = driver.act(obs, env) if driver is not None else label
        executed, _ = noise.apply(label if expert_turn else np.asarray(chosen, np.float32))
        result = env.step(executed)
        recorder.add(obs, label, not np.array_equal(executed, label), result.reward)
        executed_rows.append([round(float(v), 6) for v in executed])
        executor.append("e" if expert_turn else "p")
        ret += result.reward
        info = result.info
        obs = result.observation
        if result.done:
            break
    if "progress" in obs.telemetry:
        info = {**info, "progress": float(obs.telemetry["progress"][0])}
    plain = {k: v.item() if isinstance(v, np.generic) else v for k, v in info.items()
             if isinstance(v, bool | int | float | str | np.generic)}
    return recorder.finish({
        "env_id": env.env_id, "track_seed": seed, "return": round(ret, 4), "noise": live.noise,
        "seconds": round(time.perf_counter() - started, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **plain,
        "live_slot": order.slot, "live_round": order.round_index, "live_beta": beta,
        "policy_version": version if runtime is not None else 0,
        "live_driver": "expert" if set(executor) == {"e"} else ("policy" if set(executor) == {"p"} else "mixed"),
        "live_executor": "".join(executor), "live_executed": executed_rows,
    })


def commit_in_order(store: DatasetStore, record: EpisodeRecord) -> EpisodeInfo:
    """Take the next index under the writer lock and commit: stored order = commit order.

    Collectors share the lock; one that finds it taken waits its turn (a commit takes tens of
    milliseconds), so two episodes never race for one index.
    """
    while True:
        try:
            with writer_lock(store.path):
                return write_episode(store, store.next_index(), record)
        except DatasetBusy:
            time.sleep(LOCK_RETRY_S)


class Collector:
    """The collector actor's body: its own env and expert, the current policy version cached."""

    def __init__(self, dataset: str, live: LiveConfig, threads: int) -> None:
        from drivelab.sweep.resources import apply_trial_threads

        apply_trial_threads(threads)
        self.live = live
        self.env = make_env(live.env, max_steps=live.max_steps)
        self.expert = make_expert(self.env)
        self.store = DatasetStore.open(dataset)
        self.cache = RuntimeCache()

    def pid(self) -> int:
        return os.getpid()

    def collect(self, order: EpisodeOrder, policy: PolicyVersion | None) -> dict[str, Any]:
        """Drive and commit one episode; ``policy`` arrives dereferenced from its one ``ray.put``."""
        runtime = self.cache.runtime_for(policy)
        record = drive_mixed_episode(self.env, self.expert, runtime, self.live, order,
                                     self.cache.version)
        info = commit_in_order(self.store, record)
        attrs = info.attrs
        return {"index": info.index, "length": info.length, "slot": order.slot,
                "beta": attrs["live_beta"], "policy_version": attrs["policy_version"],
                "driver": attrs["live_driver"], "seconds": attrs["seconds"],
                "policy_steps": attrs["live_executor"].count("p"), "committed_at": time.time()}
