"""`drivelab live`: the driver loop over Ray actors (collectors, a trainer, a player).

The driver owns no heavy work: it hands each idle actor its next call and waits on all futures
at once (``ray.wait``). Collectors get the next track slot, β from the schedule and the newest
version's `ObjectRef`; the trainer gets the next period whenever the previous one ended (over
what is committed then); the player gets the newest version at each of its episode boundaries.
Collector actors restart after a crash (``max_restarts``); the slot they were driving is handed
out again, its episode never committed. Ctrl-C or kill -9 of the driver leave committed episodes
and the run's checkpoints; ``--resume RUN`` continues from the last checkpoint and the next slot.
On a cluster (``--address``) the dataset and runs folder must be shared storage at one path.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivelab.config import ExperimentConfig, dump_config, load_config
from drivelab.config.live_section import LiveConfig
from drivelab.errors import DrivelabError, Interrupted
from drivelab.live.beta import beta_at
from drivelab.live.collector import Collector, EpisodeOrder
from drivelab.live.dataset import (
    check_live_dataset,
    existing_episodes,
    next_slot,
    open_live_dataset,
)
from drivelab.live.ledger import LiveLedger
from drivelab.live.player import LivePlayer
from drivelab.live.trainer_actor import LiveTrainer
from drivelab.live.weights import publish, read_version
from drivelab.runs.checkpoints import atomic_write_text, list_checkpoints
from drivelab.runs.folder import RunFolder
from drivelab.seeds import HELD_OUT_SEED

#: Collector actors per core at most: each is a process with its own simulator, and Ray shares
#: the cores out in fractions (cores / (collectors + 2)) that it cannot split below 1e-4.
COLLECTORS_PER_CPU = 8


def live_config(config: ExperimentConfig) -> LiveConfig:
    """The config's live section, with the stop the live loop needs (`dagger` stops by rounds)."""
    if config.live is None:
        raise DrivelabError("the config has no live: section: add one (live.stop.batches=..., "
                            "live.collectors=...) or override e.g. live.stop.seconds=600")
    live, stop = config.live, config.live.stop
    if stop.batches is None and stop.seconds is None and stop.score is None and live.episodes is None:
        raise DrivelabError("the live loop needs a stop: set live.stop.batches, live.stop.seconds, "
                            "live.stop.score or live.episodes")
    return live


def check_collectors(collectors: int, cpus: float, where: str) -> None:
    """Refuse more collectors than the cores can sensibly share (before any actor starts)."""
    limit = max(1, int(cpus * COLLECTORS_PER_CPU))
    if collectors > limit:
        shown = str(collectors) if collectors < 10**9 else f"{collectors:.2e}"
        raise DrivelabError(f"{shown} collectors for the {cpus:g} cores {where}: at most {limit} "
                            f"({COLLECTORS_PER_CPU} per core, each is a process with its own simulator); "
                            "lower --collectors (live.collectors)")


@dataclass
class LiveState:
    """What the driver knows between events."""

    live: LiveConfig
    slot: int
    batch: int = 0
    version: int = 0
    policy: Any = None  # the newest version's ObjectRef
    run: str | None = None
    episodes: int = 0
    frames: int = 0
    started: float = field(default_factory=time.time)
    given: dict[int, int] = field(default_factory=dict)  # collector -> episodes handed out
    best_score: float = float("-inf")

    def order_for(self, slot: int) -> EpisodeOrder:
        """The order for ``slot`` now: β and round of the newest version (a re-driven slot too)."""
        return EpisodeOrder(slot, beta_at(self.live.beta, self.version), self.version)

    def next_order(self) -> EpisodeOrder:
        order = self.order_for(self.slot)
        self.slot += 1
        return order

    def stopped(self) -> str | None:
        stop = self.live.stop
        if stop.batches is not None and self.batch >= stop.batches:
            return f"trained {self.batch} batches"
        if stop.seconds is not None and time.time() - self.started >= stop.seconds:
            return f"ran {stop.seconds:g} s"
        if stop.score is not None and self.best_score >= stop.score:
            return f"the player scored {self.best_score:.3f}"
        return None


def run_live(
    config: ExperimentConfig | None, runs_root: Path, collectors: int | None = None,
    address: str | None = None, resume: str | None = None, say: Any = print,
    overrides: list[str] | None = None, append: bool = False,
) -> dict[str, Any]:
    """Run the live loop until its stop condition; a summary of what it did.

    With ``resume`` the config is the run's own with ``overrides`` on top; those may change only
    the loop (``live.*``, e.g. a later stop) and are saved into the run's ``config.yaml``, so the
    run's config says what it ran with and a second resume keeps them. A new run on a dataset
    that already holds episodes needs ``append`` (it trains on them too; they are reported).
    """
    from drivelab.sweep.engine import start_ray

    if resume is not None:
        folder = RunFolder.open(resume, runs_root)
        config = resumed_config(folder, overrides or [])
        resume = str(folder.path)
    assert config is not None
    live = live_config(config)
    if collectors is not None:
        if collectors < 1:
            raise DrivelabError(f"--collectors must be at least 1 (got {collectors})")
        live = live.model_copy(update={"collectors": collectors})
    if address is None:  # a cluster's cores are known once connected (checked again then)
        check_collectors(live.collectors, os.cpu_count() or 1, "of this machine")
    check_live_dataset(config, resume is not None, append)
    earlier = existing_episodes(config) if append else None
    started_ray = start_ray(address, live.threads)
    try:
        import ray

        check_collectors(live.collectors, float(ray.cluster_resources().get("CPU", 1)), "Ray offers")
        open_live_dataset(config, live, resume is not None, append)  # made only once Ray runs
        if earlier is not None:
            say(f"appending to {config.data.path}, which holds {earlier}: the trainer trains on them too")
        summary = _drive_loop(config, live, runs_root, resume, say)
        return {**summary, "earlier": earlier} if earlier is not None else summary
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def resumed_config(folder: RunFolder, overrides: list[str]) -> ExperimentConfig:
    """The run's config with ``live.*`` overrides, written back; any other override is refused.

    The trainer's periods read the run's own config (its checkpoints fix the model, the data and
    the optimisation), so a ``train.lr=...`` here would be silently ignored: refused instead.
    """
    fixed = [o.split("=", 1)[0] for o in overrides if not o.split("=", 1)[0].strip().startswith("live.")]
    if fixed:
        raise DrivelabError(f"--resume can change only the loop (live.*), not {', '.join(fixed)}: the run's "
                            "checkpoints fix the rest; start a new live run to change it")
    config = load_config(folder.config_path, overrides)
    if overrides:
        atomic_write_text(folder.config_path, dump_config(config))
    return config


def _actor_options(live: LiveConfig, share: float) -> dict[str, Any]:
    from drivelab.sweep.resources import worker_env

    return {"num_cpus": share, "runtime_env": {"env_vars": worker_env(live.threads)}}


def _drive_loop(config: ExperimentConfig, live: LiveConfig, runs_root: Path, resume: str | None,
                say: Any) -> dict[str, Any]:
    import ray

    ledger = LiveLedger(Path(resume) if resume else None)
    state = LiveState(live, slot=next_slot(config.data.path, live.seed))
    cpus = float(ray.cluster_resources().get("CPU", 1))
    share = cpus / (live.collectors + 2)
    remote_collector = ray.remote(max_restarts=-1, max_task_retries=0)(Collector)
    actors = [remote_collector.options(**_actor_options(live, share)).remote(
        str(config.data.path), live, live.threads) for _ in range(live.collectors)]
    trainer = ray.remote(LiveTrainer).options(**_actor_options(live, share)).remote(
        config, str(runs_root.resolve()), resume, live.threads)
    loop = LiveLoop(config, live, state, ledger, actors, trainer, share, say)
    if resume is not None:
        loop.resumed(resume)
    for index, actor in enumerate(actors):
        ledger.add("collector", collector=index, pid=ray.get(actor.pid.remote()))
    if loop.player is not None:
        ray.get(loop.player.ready.remote())
    state.started = time.time()  # the stop clock and the rates start once every actor is up
    try:
        reason = loop.run()
    except KeyboardInterrupt:
        loop.shutdown()
        where = f"run {state.run} (batch {state.batch})" if state.run else "no run yet"
        raise Interrupted(
            f"stopped: {state.episodes} episodes committed to {config.data.path} are kept, {where}; "
            + (f"continue with `drivelab live --resume {state.run}`" if state.run else "start again")
        ) from None
    loop.shutdown()
    elapsed = time.time() - state.started
    return {"reason": reason, "run": state.run, "batch": state.batch, "versions": state.version,
            "episodes": state.episodes, "frames": state.frames, "seconds": round(elapsed, 1),
            "frames_per_s": round(state.frames / elapsed, 2) if elapsed else 0.0}


class LiveLoop:
    """The event loop: one future per busy actor, the next call handed out as each one ends."""

    def __init__(self, config: ExperimentConfig, live: LiveConfig, state: LiveState, ledger: LiveLedger,
                 actors: list[Any], trainer: Any, share: float, say: Any) -> None:
        self.config, self.live, self.state, self.ledger = config, live, state, ledger
        self.actors, self.trainer, self.share, self.say = actors, trainer, share, say
        self.pending: dict[Any, tuple[str, int, Any]] = {}
        self.player: Any = None
        if live.player.enabled:  # started now, so its start-up is not part of the first hot swap
            import ray

            self.player = ray.remote(LivePlayer).options(**_actor_options(live, share)).remote(
                live.env, live.player, live.threads)

    def resumed(self, run: str) -> None:
        """Continue from the run's last checkpoint: publish it again as the newest version."""
        self.state.run = run
        self.state.batch = list_checkpoints(RunFolder.open(run).checkpoints)[-1]
        self.state.version = len(self.ledger.of_kind("version"))
        self._publish(resumed=True)

    def run(self) -> str:
        for index in range(len(self.actors)):
            self._collect(index)
        while True:
            reason = self.state.stopped()
            if reason is not None:
                return reason
            self._maybe_train()
            if not self.pending:
                return "every collector drove its episodes"
            ready, _ = __import__("ray").wait(list(self.pending), num_returns=1, timeout=1.0)
            for future in ready:
                self._finished(future)

    def _collect(self, index: int, order: EpisodeOrder | None = None) -> None:
        given = self.state.given.get(index, 0)
        if order is None:
            if self.live.episodes is not None and given >= self.live.episodes:
                return
            if self.live.seed + self.state.slot >= HELD_OUT_SEED:
                return  # collection never drives a held-out track
            order = self.state.next_order()
            self.state.given[index] = given + 1
        future = self.actors[index].collect.remote(order, self.state.policy)
        self.pending[future] = ("collect", index, order)

    def _maybe_train(self) -> None:
        if any(kind == "train" for kind, _, _ in self.pending.values()):
            return
        if self.state.run is None and self.state.episodes < self.live.warmup_episodes:
            return
        until = self.state.batch + self.live.refresh_every
        if self.live.stop.batches is not None:
            until = min(until, self.live.stop.batches)
        self.pending[self.trainer.period.remote(until)] = ("train", 0, until)

    def _finished(self, future: Any) -> None:
        import ray

        kind, index, order = self.pending.pop(future)
        try:
            result = ray.get(future)
        except ray.exceptions.RayTaskError as exc:  # the actor's own error, e.g. a refused config
            cause = getattr(exc, "cause", None) or exc
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise DrivelabError(f"live {kind}: {first}") from None
        except ray.exceptions.RayActorError as exc:
            if kind != "collect":
                what = f"collector {index} (restarting)" if kind == "restart" else f"the live {kind}er"
                raise DrivelabError(f"{what} died ({str(exc).splitlines()[0][:160]})") from None
            self.ledger.add("crash", collector=index, slot=order.slot)
            self.say(f"collector {index} crashed: episode on slot {order.slot} discarded, restarting it")
            # a call to a restarting actor fails at once unless it may be retried: this one waits
            # for the new actor (its pid), then the same slot is driven again
            self.pending[self.actors[index].pid.options(max_task_retries=-1).remote()] = ("restart", index, order)
            return
        if kind == "restart":  # the collector is back (a new process): drive the lost slot again
            self.ledger.add("collector", collector=index, pid=result, restarted=True)
            self._collect(index, self.state.order_for(order.slot))
            return
        getattr(self, f"_{kind}_done")(index, result)

    def _collect_done(self, index: int, row: dict[str, Any]) -> None:
        self.state.episodes += 1
        self.state.frames += int(row["length"])
        self.ledger.add("episode", collector=index, **row)
        elapsed = max(time.time() - self.state.started, 1e-6)
        self.ledger.scalar("live/episodes", self.state.episodes, self.state.batch)
        self.ledger.scalar("live/frames", self.state.frames, self.state.batch)
        self.ledger.scalar("live/frames_per_s", self.state.frames / elapsed, self.state.batch)
        self._collect(index)

    def _train_done(self, _index: int, row: dict[str, Any]) -> None:
        first = self.state.run is None
        self.state.run, self.state.batch = row["run"], int(row["batch"])
        if first:
            self.ledger.attach(Path(row["run"]))
        self.ledger.add("period", **row)
        self.ledger.scalar("live/trainer_samples_per_s", row["samples_per_s"], self.state.batch)
        self.ledger.scalar("live/window_episodes", row["episodes"], self.state.batch)
        self.ledger.scalar("live/window_frames", row["frames"], self.state.batch)
        self.say(f"batch {row['batch']}: trained on {row['episodes']} episodes ({row['frames']} frames), "
                 f"{row['samples_per_s']} samples/s")
        self._publish()

    def _publish(self, resumed: bool = False) -> None:
        assert self.state.run is not None
        self.state.version += 1
        version = read_version(RunFolder.open(self.state.run), self.state.version, self.state.batch)
        self.state.policy = publish(version)
        self.ledger.add("version", version=self.state.version, batch=version.batch,
                        written_at=version.written_at, resumed=resumed)
        self.ledger.scalar("live/beta", beta_at(self.live.beta, self.state.version), self.state.batch)
        if self.player is not None and not any(kind == "play" for kind, _, _ in self.pending.values()):
            self._play()  # the player's first version; afterwards it asks again at each episode end

    def _play(self) -> None:
        self.pending[self.player.drive.remote(self.state.policy)] = ("play", 0, None)

    def _play_done(self, _index: int, row: dict[str, Any]) -> None:
        self.ledger.add("play", **{k: v for k, v in row.items() if k != "called_at"})
        score = row.get("watch/score")
        if isinstance(score, int | float):
            self.state.best_score = max(self.state.best_score, float(score))
        self._play()

    def shutdown(self) -> None:
        import ray

        for actor in [*self.actors, self.trainer, self.player]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self.ledger.close()
