"""The live player: drive the newest policy version on held-out tracks, swapping at episode ends.

It is watch mode's `CheckpointWatcher` with the policy handed in from Ray's object store instead
of read from disk, so the rows go to the run's ``watch.jsonl`` and ``tb/watch`` exactly as
`drivelab train --watch-every` writes them (score, reward, completion, off-track events, a GIF
and a TensorBoard video per drive). The driver hands it the newest version at each episode
boundary; the hot-swap delay is measured from the checkpoint file's mtime to the first step with
the new weights, and split into the wait for the current episode and the swap itself.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from drivelab.config.live_section import PlayerConfig
from drivelab.live.weights import PolicyVersion, RuntimeCache
from drivelab.sim import make_env
from drivelab.watch.player import NICE, CheckpointWatcher
from drivelab.watch.spec import PlayerSpec


class LivePlayer:
    """The player actor's body: one env, the watch files, the newest runtime cached."""

    def __init__(self, env: str, player: PlayerConfig, threads: int) -> None:
        from drivelab.sweep.resources import apply_trial_threads

        with contextlib.suppress(OSError):  # the player yields to the trainer and collectors
            os.nice(NICE)
        apply_trial_threads(threads)
        self.env, self.player = env, player
        make_env(env, max_steps=player.max_steps).close()  # imports paid now, not in the first swap
        self.watcher: CheckpointWatcher | None = None  # the run folder exists from the first version
        self.cache = RuntimeCache()
        self.episodes = 0
        self.last_end = 0.0

    def drive(self, policy: PolicyVersion) -> dict[str, Any]:
        """One episode with ``policy`` (built once per version) on the next held-out track."""
        called = time.time()
        swapped = policy.version != self.cache.version
        runtime = self.cache.runtime_for(policy)
        if self.watcher is None:
            self.watcher = CheckpointWatcher(PlayerSpec(run=Path(policy.run), every=1, env=self.env,
                                                        max_steps=self.player.max_steps, seed=self.player.seed))
        driving_at = time.time()
        self.watcher.seed = self.player.seed + self.episodes % self.player.tracks
        self.watcher.writer.add_scalar("watch/version", policy.version, global_step=policy.batch)
        row = self.watcher.watch(policy.batch, runtime)
        self.episodes += 1
        timing: dict[str, Any] = {"version": policy.version, "swapped": swapped}
        if swapped:
            free_at = max(policy.written_at, self.last_end or policy.written_at)
            timing.update({
                "hot_swap_s": round(driving_at - policy.written_at, 3),
                "hot_swap_after_episode_s": round(driving_at - free_at, 3),
                "waited_for_episode_s": round(max(0.0, free_at - policy.written_at), 3),
            })
        self.last_end = time.time()
        timing["called_at"] = called
        return {**row, **timing}

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
