"""`drivelab dagger CONFIG --rounds R`: DAgger in rounds, without live concurrency.

Round 0 is behaviour cloning: ``live.round_episodes`` expert episodes, then ``live.round_batches``
batches. Each round r >= 1 drives ``round_episodes`` episodes with the β_r-mixture of the expert
and the last round's policy (the expert labels every frame), aggregates them into the same
dataset and trains ``round_batches`` more batches from the last checkpoint over everything
collected so far. It is the live loop's collector, trainer and ledger, called one after the other
in this process (no Ray), for machines where a live loop is not wanted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivelab.config import ExperimentConfig
from drivelab.config.live_section import LiveConfig
from drivelab.errors import DrivelabError, Interrupted
from drivelab.live.beta import beta_at
from drivelab.live.collector import Collector, EpisodeOrder
from drivelab.live.dataset import existing_episodes, next_slot, open_live_dataset
from drivelab.live.ledger import LiveLedger
from drivelab.live.trainer_actor import LiveTrainer
from drivelab.live.weights import read_version
from drivelab.runs.folder import RunFolder


def dagger_live(config: ExperimentConfig) -> LiveConfig:
    """The config's live section, or the defaults (``live.stop`` is the live loop's: the rounds
    are the stop rule here)."""
    return config.live if config.live is not None else LiveConfig()


def run_dagger(config: ExperimentConfig, runs_root: Path, rounds: int, say: Any = print,
               start_run: Path | None = None, append: bool = False) -> dict[str, Any]:
    """Round 0 (expert) + ``rounds`` DAgger rounds; a summary of the run.

    ``start_run``: a run already trained on ``config.data.path`` (`drivelab demo --dagger`'s
    behaviour-cloning run) is round 0: the rounds continue it, collecting with its policy.
    ``append``: ``data.path`` may already hold episodes; every round trains on them too, so they
    are reported first and the summary counts them (``earlier``).
    """
    if rounds < 0:
        raise DrivelabError(f"--rounds must be 0 or more (got {rounds}): round 0 is the expert's")
    live = dagger_live(config)
    earlier = existing_episodes(config) if append else None
    open_live_dataset(config, live, resuming=start_run is not None, append=append)
    if earlier is not None:
        say(f"appending to {config.data.path}, which holds {earlier}: every round trains on them too")
    # rounds run one thing at a time in this process: it keeps every core (live.threads is for
    # actors that share them); setting the pool here would also leak into the caller's process
    collector = Collector(str(config.data.path), live, None)
    trainer = LiveTrainer(config, str(runs_root), str(start_run) if start_run else None, None)
    ledger = LiveLedger()
    slot = next_slot(config.data.path, live.seed)
    policy, first, base = None, 0, 0
    if start_run is not None:
        folder = RunFolder.open(start_run)
        ledger.attach(folder.path)
        policy = read_version(folder, 1)
        first, base = 1, policy.batch - live.round_batches
    episodes = frames = 0
    row: dict[str, Any] = {}
    try:
        for round_index in range(first, rounds + 1):
            beta = beta_at(live.beta, round_index)
            for _ in range(live.round_episodes):
                done = collector.collect(EpisodeOrder(slot, beta, round_index), policy)
                ledger.add("episode", collector=0, round=round_index, **done)
                slot, episodes, frames = slot + 1, episodes + 1, frames + int(done["length"])
            row = trainer.period(base + (round_index + 1) * live.round_batches)
            if ledger.run is None:
                ledger.attach(Path(row["run"]))
            ledger.add("period", round=round_index, beta=beta, **row)
            policy = read_version(RunFolder.open(row["run"]), round_index + 1, int(row["batch"]))
            ledger.add("version", version=policy.version, batch=policy.batch, written_at=policy.written_at)
            say(f"round {round_index} (beta {beta:.3f}): {row['episodes']} episodes, "
                f"{row['frames']} frames, batch {row['batch']}")
    except KeyboardInterrupt:
        kept = f"run {trainer.run}" if trainer.run else "no run yet"
        raise Interrupted(f"stopped: {episodes} episodes committed to {config.data.path}, {kept} kept") from None
    finally:
        ledger.close()
        collector.env.close()
    summary = {"run": trainer.run, "rounds": rounds, "episodes": episodes, "frames": frames,
               "batch": row.get("batch", 0)}
    return {**summary, "earlier": earlier} if earlier is not None else summary
