"""Watch mode, the trainer's side: start the player, and at the end wait for it and ask what it did.

Nothing here imports the simulator or the evaluator: the player is a separate process
(`drivelab.watch.player`) started with the command line `drivelab.watch.spec.PlayerSpec` writes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from drivelab.runs.checkpoints import list_checkpoints
from drivelab.runs.folder import RunFolder
from drivelab.watch.spec import (
    FINISH,
    PLAYER_LOG,
    WATCH_DIR,
    PlayerSpec,
    WatchOptions,
    due_batches,
    read_watch_rows,
)

PLAYER_MODULE = "drivelab.watch.player"  # this package's own player, run with python -m


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
        spec = PlayerSpec.for_period(run, options, env, period, after, last)
        command = [sys.executable, "-m", PLAYER_MODULE, *spec.to_argv()]
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
