"""The ``live:`` section: collectors feeding a growing dataset, a trainer, a player (`drivelab live`).

Everything the live loop and `drivelab dagger` need is declared here so a bad value costs one
line before Ray starts. The driver mix is DAgger's β: the expert executes with probability β
(drawn per episode or per step) and the current policy otherwise; the expert's action is the
label either way. β follows a schedule over rounds, a round being one published policy version.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from drivelab.config.base import PositiveInt, _field_error, _Section
from drivelab.seeds import COLLECTION_SEED, DEFAULT_ENV

Probability = Annotated[float, Field(ge=0, le=1)]


class BetaConfig(_Section):
    """β per round ``i``: ``constant`` β0; ``linear`` max(floor, β0 - i * step); ``exponential`` β0 * p^i.

    ``per: episode`` draws who drives once per episode ("Learning by Cheating"), ``per: step``
    at every step (Ross et al.'s mixture policy).
    """

    schedule: Literal["constant", "linear", "exponential"] = "exponential"
    start: Probability = 1.0
    floor: Probability = 0.0
    step: Probability = 0.25
    p: Probability = 0.5
    per: Literal["episode", "step"] = "episode"


class PlayerConfig(_Section):
    """The player drives the newest version on held-out tracks ``seed``, ``seed + 1``, ..."""

    seed: Annotated[int, Field(ge=10_000)] = 10_000
    tracks: PositiveInt = 3
    max_steps: PositiveInt = 1000
    enabled: bool = True


class StopConfig(_Section):
    """When the live loop ends: the first of trainer batches, wall seconds, or a player score."""

    batches: PositiveInt | None = None
    seconds: Annotated[float, Field(gt=0)] | None = None
    score: float | None = None


class LiveConfig(_Section):
    """Collectors, the driver mix, the trainer's refresh cadence, the player, the stop rule."""

    collectors: PositiveInt = 1
    #: Episodes each collector drives in all (None: until the stop condition).
    episodes: PositiveInt | None = None
    #: Episodes committed before the trainer starts (all expert-driven: there is no policy yet).
    warmup_episodes: PositiveInt = 2
    max_steps: PositiveInt = 1000
    env: str = DEFAULT_ENV
    seed: Annotated[int, Field(ge=COLLECTION_SEED, lt=10_000)] = COLLECTION_SEED
    beta: BetaConfig = Field(default_factory=BetaConfig)
    noise: Probability = 0.0
    #: Steps a perturbation is held; null: 0.2 s of the env's steps (see `data.collect`).
    noise_hold: PositiveInt | None = None
    refresh_every: PositiveInt = 100
    player: PlayerConfig = Field(default_factory=PlayerConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    #: Intra-op threads of each actor (collector, trainer, player); OMP_WAIT_POLICY is PASSIVE.
    threads: PositiveInt = 1
    #: Batches each `drivelab dagger` round trains (from the last round's checkpoint).
    round_batches: PositiveInt = 200
    #: Episodes each `drivelab dagger` round collects with the current mixture.
    round_episodes: PositiveInt = 4

    @model_validator(mode="after")
    def _beta_floor(self) -> LiveConfig:
        # the live loop's stop (live.stop / live.episodes) is checked by `drivelab live` itself:
        # `drivelab dagger` stops by its rounds and must not demand one
        if self.beta.floor > self.beta.start:
            raise _field_error("beta", f"beta.floor ({self.beta.floor}) is above beta.start "
                               f"({self.beta.start}): the floor is where the schedule ends")
        return self
