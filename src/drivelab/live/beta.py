"""DAgger's β: how often the expert, rather than the current policy, executes.

Round ``i`` is the number of policy versions published before an episode starts, so round 0 is
always the expert's (there is no policy yet) and each new checkpoint moves the schedule on.
"""

from __future__ import annotations

import numpy as np

from drivelab.config.live_section import BetaConfig


def beta_at(config: BetaConfig, round_index: int) -> float:
    """β for round ``round_index`` (1.0 in round 0: nothing but the expert can drive yet)."""
    if round_index <= 0:
        return 1.0
    if config.schedule == "constant":
        value = config.start
    elif config.schedule == "linear":
        value = config.start - round_index * config.step
    else:
        value = config.start * config.p**round_index
    return float(max(config.floor, min(1.0, value)))


class ExecutorDraw:
    """Who executes each step of one episode: True for the expert, from the episode's own RNG.

    ``per: episode`` draws once, so an episode is wholly the expert's or the policy's; ``per:
    step`` draws at every step. The draw comes from the episode's generator, so an episode
    replays identically from its seed.
    """

    def __init__(self, beta: float, per: str, rng: np.random.Generator) -> None:
        self.beta = beta
        self.per = per
        self._rng = rng
        self._episode = bool(rng.random() < beta)

    def expert_executes(self) -> bool:
        if self.per == "episode":
            return self._episode
        return bool(self._rng.random() < self.beta)
