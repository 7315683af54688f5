"""Watch mode's one protocol: the user's options, the player's spec (to and from argv), its files.

The trainer starts the player as a separate process (`drivelab.watch.launcher`) and the player
(`drivelab.watch.player`) parses what it was started with; both sides use `PlayerSpec`, so the
command line between them is written and read by the same code, and every default lives in
`WatchOptions` alone.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from drivelab.config import TrainConfig
from drivelab.errors import DrivelabError
from drivelab.runs.folder import RunFolder
from drivelab.runs.metrics import WATCH_ROWS, read_json_lines
from drivelab.seeds import DEFAULT_ENV, HELD_OUT_SEED

WATCH_DIR = "watch"  # GIFs and the player's log, in the run folder
WATCH_TB = "watch"  # the player's TensorBoard run, under the run's tb/
PLAYER_LOG = "player.log"
FINISH = b"finish\n"  # the trainer's word on the player's stdin


class WatchError(DrivelabError):
    """A watch-mode setting that cannot work (checked before any run folder exists)."""


@dataclass(frozen=True)
class WatchOptions:
    """How the player watches a training period (`drivelab train --watch-every N ...`).

    ``seed`` is one fixed track for every checkpoint, so the score curve compares checkpoints and
    not tracks; the default is the first held-out track (`drivelab.seeds`). ``env`` defaults to
    the env the dataset was recorded in.
    """

    every: int
    max_steps: int = 1000
    seed: int = HELD_OUT_SEED
    env: str | None = None
    finish_timeout_s: float = 600.0
    poll_s: float = 2.0

    def __post_init__(self) -> None:
        if self.every < 1:
            raise WatchError(f"--watch-every must be at least 1 batch (got {self.every})")
        if self.max_steps < 1:
            raise WatchError(f"--watch-steps must be at least 1 (got {self.max_steps})")
        if self.seed < 0:
            raise WatchError(f"--watch-seed must be 0 or more (got {self.seed})")
        if self.finish_timeout_s < 0 or self.poll_s <= 0:
            raise WatchError("watch finish_timeout_s must be >= 0 and poll_s > 0")

    @classmethod
    def given(cls, every: int, **values: Any) -> WatchOptions:
        """Options from command-line values, where None means "the default"."""
        return cls(every=every, **{k: v for k, v in values.items() if v is not None})

    def check(self, train: TrainConfig) -> None:
        """Refuse a cadence the checkpoints do not follow: the player can only drive checkpoints."""
        if self.every % train.checkpoint_every:
            raise WatchError(
                f"--watch-every {self.every} needs a checkpoint at every multiple of {self.every}, "
                f"but train.checkpoint_every={train.checkpoint_every}: watch every multiple of "
                f"{train.checkpoint_every}, or add train.checkpoint_every={self.every}"
            )

    def describe(self, env: str) -> dict[str, Any]:
        """What ``periods.json`` records about the watching of a period."""
        return {"every": self.every, "max_steps": self.max_steps, "seed": self.seed, "env": env}


@dataclass(frozen=True)
class PlayerSpec:
    """Everything one player process needs: which run, which checkpoints, how to drive them."""

    run: Path
    every: int
    env: str = DEFAULT_ENV
    max_steps: int = WatchOptions.max_steps
    seed: int = WatchOptions.seed
    period: int = 0  # training period, written in the rows
    after: int = 0  # skip checkpoints up to this batch (earlier periods')
    last: int = -1  # also drive this (the period's final) batch
    poll_s: float = WatchOptions.poll_s

    @classmethod
    def for_period(cls, run: RunFolder, options: WatchOptions, env: str, period: int, after: int,
                   last: int) -> PlayerSpec:
        return cls(run=run.path.resolve(), every=options.every, env=env, max_steps=options.max_steps,
                   seed=options.seed, period=period, after=after, last=last, poll_s=options.poll_s)

    def to_argv(self) -> list[str]:
        """The player's command-line arguments: the run, then ``--name value`` per field."""
        argv = [str(self.run)]
        for f in fields(self)[1:]:
            argv += [_flag(f.name), str(getattr(self, f.name))]
        return argv

    @classmethod
    def from_argv(cls, argv: list[str] | None, prog: str, description: str) -> PlayerSpec:
        """Parse what `to_argv` wrote (or what a user typed to start a player by hand)."""
        parser = argparse.ArgumentParser(prog=prog, description=description)
        parser.add_argument("run", type=Path, help="run folder")
        for f in fields(cls)[1:]:
            required = f.default is MISSING
            parser.add_argument(_flag(f.name), dest=f.name, type=_TYPES.get(f.name, int),
                                required=required, default=None if required else f.default,
                                help=_HELP[f.name])
        return cls(**vars(parser.parse_args(argv)))


def _flag(name: str) -> str:
    return "--" + name.removesuffix("_s").replace("_", "-")


_TYPES: dict[str, type] = {"env": str, "poll_s": float}
_HELP = {
    "every": "drive checkpoints at multiples of this",
    "env": "environment to drive",
    "max_steps": "step cap of the episode",
    "seed": "track seed (the same for every checkpoint)",
    "period": "training period (written in the rows)",
    "after": "skip checkpoints up to this batch",
    "last": "also drive this (final) batch",
    "poll_s": "seconds between looks at checkpoints/",
}


def watch_rows_path(run: RunFolder) -> Path:
    return run.path / WATCH_ROWS


def read_watch_rows(run: RunFolder) -> list[dict[str, Any]]:
    """Rows of ``watch.jsonl`` in file order (a torn last line from a killed player is skipped)."""
    return read_json_lines(watch_rows_path(run))


def due_batches(checkpoints: list[int], every: int, after: int, last: int) -> list[int]:
    """Checkpoints the player drives: this period's (past ``after``) at multiples of ``every``,
    and the final one (``last``)."""
    return [b for b in checkpoints if b > after and (b % every == 0 or b == last)]
