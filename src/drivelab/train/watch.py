"""Watch mode, the trainer's side: start the player, and at the end wait for it and ask what it did.

Charles' "streamed" training showed a model driving while it was still learning, because a loss
curve says little about whether a car stays on the road. ``drivelab train ... --watch-every N``
does the same with a separate *player* process (`drivelab.evaluate.watch`) that drives each new
checkpoint at a multiple of N on one fixed held-out track and logs how it went. This module only
starts and stops that process: the trainer never imports the simulator.

Cadence. ``N`` must be a multiple of ``train.checkpoint_every`` (checked before a run exists), so a
checkpoint lands on every multiple of N; the player drives those and the period's final batch
(the model the period hands over, always checkpointed). Checkpoints from earlier periods are not
driven again.

Files in the run folder, all written by the player alone:

- ``watch.jsonl``: one row per driven checkpoint, ``{"batch", "watch/score", "watch/reward",
  "watch/completion", "watch/video", ...}``. It is a file of its own rather than more rows in
  ``metrics.jsonl`` so that each file has exactly one writer and rows can never interleave;
  `drivelab.train.logs.read_metrics` merges it back in. A row is written last, after the GIF and
  the TensorBoard points, so it doubles as the "watched" marker.
- ``tb/watch/``: the player's own TensorBoard writer (run "watch" next to the trainer's), so the
  two processes never share an event file; scalars ``watch/score|reward|completion`` and the
  video ``watch/video`` at the checkpoint's batch.
- ``watch/batch_<N>.gif`` (the whole episode) and ``watch/player.log`` (the player's output).

The trainer talks to the player through its stdin: ``finish`` (or end-of-file, which is what a
killed trainer leaves behind) means "drive what is written, then exit", so a player never outlives
its trainer by more than the backlog. Speed: the player runs at ``nice`` +10 with one torch
thread, so the training loop never waits for it; on a 2-core machine it still takes one core's
share while it drives (and none while it waits for the next checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivelab.config import TrainConfig
from drivelab.errors import DrivelabError
from drivelab.runs.checkpoints import list_checkpoints
from drivelab.runs.folder import RunFolder
from drivelab.runs.metrics import WATCH_ROWS

WATCH_DIR = "watch"
WATCH_TB = "watch"  # under the run's tb/
PLAYER_LOG = "player.log"
PLAYER_MODULE = "drivelab.evaluate.watch"
FINISH = b"finish\n"


class WatchError(DrivelabError):
    """A watch-mode setting that cannot work (checked before any run folder exists)."""


@dataclass(frozen=True)
class WatchOptions:
    """How the player watches a training period (`drivelab train --watch-every N ...`).

    ``seed`` is one fixed track for every checkpoint, so the score curve compares checkpoints and
    not tracks; the default 10,000 is held out from collection (which uses seeds from 0).
    ``env`` defaults to the env the dataset was recorded in.
    """

    every: int
    max_steps: int = 1000
    seed: int = 10_000
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


def watch_rows_path(run: RunFolder) -> Path:
    return run.path / WATCH_ROWS


def read_watch_rows(run: RunFolder) -> list[dict[str, Any]]:
    """Rows of ``watch.jsonl`` in file order (a torn last line from a killed player is skipped)."""
    path = watch_rows_path(run)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def due_batches(checkpoints: list[int], every: int, after: int, last: int) -> list[int]:
    """Checkpoints the player drives: this period's (past ``after``) at multiples of ``every``,
    and the final one (``last``)."""
    return [b for b in checkpoints if b > after and (b % every == 0 or b == last)]


@dataclass
class WatchOutcome:
    """What the player did in one period, for ``periods.json`` and a one-line report."""

    watched: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # batch -> why that episode failed
    missed: list[int] = field(default_factory=list)  # due, never driven (player died/timed out)
    error: str | None = None  # the player as a whole

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"watched_batches": self.watched}
        if self.failed:
            out["failed"] = {str(k): v for k, v in self.failed.items()}
        if self.missed:
            out["missed"] = self.missed
        if self.error:
            out["error"] = self.error
        return out

    def line(self, run: RunFolder) -> str | None:
        """One line when something went wrong, else None (the rows say what went right)."""
        problems = []
        if self.error:
            problems.append(self.error)
        if self.failed:
            batch, why = next(iter(self.failed.items()))
            problems.append(f"{len(self.failed)} episode(s) failed (batch {batch}: {why})")
        if self.missed:
            shown = ", ".join(map(str, self.missed[:6])) + (" ..." if len(self.missed) > 6 else "")
            problems.append(f"checkpoint(s) {shown} not watched (`drivelab eval {run.path}@B` drives one)")
        if not problems:
            return None
        return f"watch: {'; '.join(problems)}; see {run.path / WATCH_DIR / PLAYER_LOG}"


class WatchPlayer:
    """The trainer's handle on the player process (rank 0 only).

    Nothing here raises into training: a player that cannot start or that dies is recorded and
    reported once at the end, and the period goes on.
    """

    def __init__(self, run: RunFolder, options: WatchOptions, env: str, period: int, after: int,
                 last: int) -> None:
        self.run = run
        self.options = options
        self.env = env
        self.after = after
        self.last = last
        self.error: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        folder = run.path / WATCH_DIR
        self.log_path = folder / PLAYER_LOG
        command = [
            sys.executable, "-m", PLAYER_MODULE, str(run.path.resolve()),
            "--every", str(options.every), "--steps", str(options.max_steps),
            "--seed", str(options.seed), "--env", env, "--period", str(period),
            "--after", str(after), "--last", str(last), "--poll", str(options.poll_s),
        ]
        # One intra-op thread, headless pygame; a session of its own so a Ctrl-C meant for the
        # trainer does not reach it half-way through a GIF (the trainer stops it instead).
        env_vars = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "SDL_VIDEODRIVER": "dummy", "PYTHONUNBUFFERED": "1"}
        try:
            folder.mkdir(exist_ok=True)
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                    env=env_vars, start_new_session=True,
                )
        except OSError as exc:
            self.error = f"the player did not start ({exc})"

    def finish(self, timeout_s: float | None = None) -> WatchOutcome:
        """Let the player drive the checkpoints already written, up to ``timeout_s``, then stop it."""
        timeout = self.options.finish_timeout_s if timeout_s is None else timeout_s
        if self.process is not None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(FINISH)
                self.process.stdin.close()
            except OSError:  # it is gone already; wait() below reads its exit code
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.error = f"the player was stopped after waiting {timeout:g} s for it"
                self._kill()
            except BaseException:  # Ctrl-C while waiting: do not leave it driving
                self._kill()
                raise
        return self.outcome()

    def stop(self) -> WatchOutcome:
        """Stop the player now (the period was interrupted)."""
        if self.process is not None and self.process.poll() is None:
            self._kill()
            self.error = self.error or "the player was stopped with the interrupted period"
        return self.outcome()

    def record(self, outcome: WatchOutcome) -> dict[str, Any]:
        """The period's ``watch`` entry in ``periods.json``: the settings and what came of them."""
        return {**self.options.describe(self.env), **outcome.record()}

    def _kill(self) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def outcome(self) -> WatchOutcome:
        """Compare the due checkpoints with the player's rows (and its exit code)."""
        result = WatchOutcome(error=self.error)
        if self.process is not None and self.process.returncode not in (None, 0) and not self.error:
            result.error = f"the player exited with code {self.process.returncode} ({self._last_log_line()})"
        rows = {int(r["batch"]): r for r in read_watch_rows(self.run) if "batch" in r}
        due = due_batches(list_checkpoints(self.run.checkpoints), self.options.every, self.after, self.last)
        for batch in due:
            row = rows.get(batch)
            if row is None:
                result.missed.append(batch)
            elif "watch/error" in row:
                result.failed[batch] = str(row["watch/error"])
            else:
                result.watched.append(batch)
        return result

    def _last_log_line(self) -> str:
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines()]
        except OSError:
            return "no log"
        lines = [ln for ln in lines if ln]
        return lines[-1][:200] if lines else "no output"
