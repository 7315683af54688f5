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
from drivelab.data.collect import CollectPlan, drive_episode
from drivelab.data.episode_writer import write_episode
from drivelab.data.locks import writer_lock
from drivelab.data.records import DatasetBusy, EpisodeInfo, EpisodeRecord
from drivelab.data.store import DatasetStore
from drivelab.evaluate.runtime import PolicyDriver, PolicyRuntime
from drivelab.live.beta import ExecutorDraw
from drivelab.live.weights import PolicyVersion, RuntimeCache
from drivelab.sim import DrivingEnv, Observation, make_env, make_expert

#: How long a collector waits for another one's commit before trying the writer lock again.
LOCK_RETRY_S = 0.02


@dataclass(frozen=True)
class EpisodeOrder:
    """What the driver asks of a collector: the slot (track seed = live.seed + slot), β, version."""

    slot: int
    beta: float
    round_index: int


class MixedSteering:
    """DAgger's mixture as a `drivelab.data.collect.Steering`: the expert or the policy executes.

    The policy observes every frame (its frame stack and history window stay right for the steps
    it drives) but its action is executed only on the policy's turns (`ExecutorDraw`, from its own
    generator ``rng([live.seed, slot, 1])`` so DART noise draws the same numbers as plain
    collection). The executed actions are kept exactly (float32 -> JSON double is lossless), so a
    replay of the episode reproduces every state the expert labelled.
    """

    def __init__(self, runtime: PolicyRuntime | None, env: DrivingEnv, live: LiveConfig, order: EpisodeOrder,
                 version: int) -> None:
        self.driver = PolicyDriver(runtime, env) if runtime is not None else None
        self.beta = order.beta if runtime is not None else 1.0  # no policy yet: the expert drives
        self.order, self.version = order, version if runtime is not None else 0
        self.draw = ExecutorDraw(self.beta, live.beta.per, np.random.default_rng([live.seed, order.slot, 1]))
        self.who: list[str] = []
        self.rows: list[list[float]] = []
        self._turn = "e"

    def reset(self, seed: int) -> None:
        if self.driver is not None:
            self.driver.reset(seed)

    def choose(self, obs: Observation, env: DrivingEnv, label: np.ndarray) -> np.ndarray:
        if self.driver is None:
            return label
        action = self.driver.act(obs, env)  # every frame, so the policy's stack is right on its turns
        self._turn = "e" if self.draw.expert_executes() else "p"
        return label if self._turn == "e" else action

    def executed(self, action: np.ndarray) -> None:
        self.who.append(self._turn)
        self.rows.append([float(v) for v in action])

    def info(self) -> dict[str, Any]:
        return {**order_attrs(self.order, self.beta, self.version), "live_executor": "".join(self.who),
                "live_driver": {"e": "expert", "p": "policy"}.get("".join(sorted(set(self.who))), "mixed"),
                "live_executed": self.rows}


def order_attrs(order: EpisodeOrder, beta: float, version: int) -> dict[str, Any]:
    """The attrs every live episode carries: its slot, round, β and the policy version that drove it."""
    return {"live_slot": order.slot, "live_round": order.round_index, "live_beta": beta,
            "policy_version": version}


def drive_live_episode(
    env: DrivingEnv, expert: Any, runtime: PolicyRuntime | None, live: LiveConfig, order: EpisodeOrder,
    version: int,
) -> EpisodeRecord:
    """One episode on track ``live.seed + slot`` through `drive_episode`, labels from the expert.

    Before the first version (``runtime`` None) the expert drives alone (β = 1).
    """
    plan = CollectPlan(env=live.env, seed=live.seed, noise=live.noise, noise_hold=live.noise_hold,
                       max_steps=live.max_steps)
    return drive_episode(env, plan, order.slot, expert, steering=MixedSteering(runtime, env, live, order, version))


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

    def __init__(self, dataset: str, live: LiveConfig, threads: int | None) -> None:
        from drivelab.sweep.resources import apply_trial_threads

        if threads is not None:  # an actor sharing cores; None: in-process, keep the process's pool
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
        record = drive_live_episode(self.env, self.expert, runtime, self.live, order, self.cache.version)
        info = commit_in_order(self.store, record)
        attrs = info.attrs
        return {"index": info.index, "length": info.length, "slot": order.slot,
                "beta": attrs["live_beta"], "policy_version": attrs["policy_version"],
                "driver": attrs["live_driver"], "seconds": attrs["seconds"],
                "policy_steps": attrs["live_executor"].count("p"), "committed_at": time.time()}
