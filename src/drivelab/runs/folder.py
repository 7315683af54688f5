"""Run folders: one version of a model line, created once and never overwritten.

``runs/<line>/<line>_v<N>/`` holds ``config.yaml`` (fully resolved), ``checkpoints/``,
``metrics.jsonl``, ``tb/``, ``periods.json`` (one entry per training session), ``run.json``
(status, the reason of a failure) and ``processor.json`` (the preprocessing it trained with). A version is claimed with ``mkdir``, which is atomic, so two
trainers started at once get different versions. A run is a usable model only once it holds a
checkpoint (`RunFolder.is_valid`); the trainer removes a new run that fails before its first one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivelab.config import ExperimentConfig, dump_config
from drivelab.errors import DrivelabError
from drivelab.processor.state import PROCESSOR_FILE, ProcessorState
from drivelab.runs.checkpoints import atomic_write_text, list_checkpoints

VERSION_PATTERN = re.compile(r"^(?P<line>.+)_v(?P<version>\d+)$")
LINE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RunError(DrivelabError):
    """A run folder that cannot be created, found or resumed."""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class RunFolder:
    """Paths and bookkeeping files of one run (a version of a model line)."""

    path: Path

    # ------------------------------------------------------------------ paths
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def line(self) -> str:
        match = VERSION_PATTERN.match(self.path.name)
        return match.group("line") if match else self.path.name

    @property
    def version(self) -> int:
        match = VERSION_PATTERN.match(self.path.name)
        return int(match.group("version")) if match else 0

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def tb(self) -> Path:
        return self.path / "tb"

    @property
    def periods_path(self) -> Path:
        return self.path / "periods.json"

    @property
    def status_path(self) -> Path:
        return self.path / "run.json"

    @property
    def processor_path(self) -> Path:
        return self.path / PROCESSOR_FILE

    # ------------------------------------------------------------------ creation / lookup
    @classmethod
    def create(cls, root: Path, line: str, version: int | None = None) -> RunFolder:
        """Claim the next free version of ``line`` under ``root`` (atomic ``mkdir``).

        ``version`` claims exactly ``<line>_v<version>`` (a sweep trial knows its folder before
        it trains, so an interrupted trial finds it again) and fails if it exists.
        """
        if not LINE_PATTERN.match(line):
            raise RunError(
                f"model line name {line!r} must be letters, digits, '_', '-' or '.' "
                "(it becomes a folder name)"
            )
        line_dir = root / line
        line_dir.mkdir(parents=True, exist_ok=True)
        if version is not None:
            candidate = line_dir / f"{line}_v{version}"
            try:
                candidate.mkdir()
            except FileExistsError:
                raise RunError(f"{candidate} exists already: resume it or remove it") from None
            return cls._initialise(candidate)
        while True:
            versions = [
                int(m.group("version"))
                for child in line_dir.iterdir()
                if (m := VERSION_PATTERN.match(child.name)) and m.group("line") == line
            ]
            candidate = line_dir / f"{line}_v{max(versions, default=0) + 1}"
            try:
                candidate.mkdir()
            except FileExistsError:
                continue  # another trainer claimed it first; take the next one
            return cls._initialise(candidate)

    @classmethod
    def _initialise(cls, path: Path) -> RunFolder:
        run = cls(path)
        run.checkpoints.mkdir()
        run.tb.mkdir()
        run.write_status("created")
        return run

    @classmethod
    def open(cls, ref: str | Path, root: Path | None = None) -> RunFolder:
        """A run by path, or by its name (``<line>_v<N>``) under ``root``."""
        path = Path(ref)
        if not path.is_dir() and root is not None:
            match = VERSION_PATTERN.match(str(ref))
            if match:
                path = root / match.group("line") / str(ref)
        if not (path / "config.yaml").is_file():
            raise RunError(
                f"{ref} is not a run folder (no config.yaml): pass runs/<line>/<line>_v<N> "
                "as made by `drivelab train`"
            )
        return cls(path)

    def remove_partial_files(self) -> list[Path]:
        """Delete temporary files a killed trainer left half-written (never a real checkpoint)."""
        partial = [p for p in self.checkpoints.glob(".*.tmp-*") if p.is_file()]
        for path in partial:
            path.unlink(missing_ok=True)
        return partial

    def remove(self) -> None:
        """Delete a run that never produced a checkpoint, so no empty version looks valid."""
        shutil.rmtree(self.path, ignore_errors=True)

    # ------------------------------------------------------------------ status
    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {"status": "unknown"}

    def write_status(self, status: str, **extra: Any) -> None:
        data = {**self.read_status(), "status": status, "updated": now_iso(), **extra}
        if status != "failed":
            data.pop("error", None)
        atomic_write_text(self.status_path, json.dumps(data, indent=2) + "\n")

    # ------------------------------------------------------------------ config, preprocessing
    def write_config(self, config: ExperimentConfig) -> None:
        """The fully resolved config, written whole or not at all (it marks the folder a run)."""
        atomic_write_text(self.config_path, dump_config(config))

    def write_processor(self, state: ProcessorState) -> None:
        atomic_write_text(self.processor_path, state.to_json())

    def read_processor(self, config: ExperimentConfig) -> ProcessorState:
        """The preprocessing the run trained with: ``processor.json``, or for runs made before
        it existed, the same numbers from the ``data`` facts of ``run.json`` and ``config``."""
        if self.processor_path.is_file():
            return ProcessorState.from_json(self.processor_path.read_text(), str(self.processor_path))
        facts = self.read_status().get("data")
        if not facts or "frame_shape" not in facts:
            raise RunError(f"{self.path}/run.json lacks the data facts a policy needs to drive")
        return ProcessorState.from_run_facts(config, facts)

    def is_valid(self) -> bool:
        """A usable model has at least one checkpoint (a failed period keeps its earlier ones)."""
        return bool(list_checkpoints(self.checkpoints))

    # ------------------------------------------------------------------ periods
    def read_periods(self) -> list[dict[str, Any]]:
        """The training sessions; an empty or truncated file reads as unknown (no periods)."""
        try:
            periods = json.loads(self.periods_path.read_text())
        except (OSError, ValueError):
            return []
        return periods if isinstance(periods, list) else []

    def _periods_for_update(self) -> list[dict[str, Any]]:
        """The periods to extend; a damaged file is set aside (kept) rather than overwritten."""
        periods = self.read_periods()
        if not periods and self.periods_path.is_file() and self.periods_path.stat().st_size:
            try:
                json.loads(self.periods_path.read_text())
            except (OSError, ValueError):
                os.replace(self.periods_path, self.path / f"periods.damaged-{int(time.time())}.json")
        return periods

    def write_periods(self, periods: list[dict[str, Any]]) -> None:
        atomic_write_text(self.periods_path, json.dumps(periods, indent=2) + "\n")

    def start_period(self, first_batch: int, **extra: Any) -> int:
        """Open a training session starting after ``first_batch`` batches; returns its number."""
        periods = self._periods_for_update()
        for earlier in periods:
            if earlier.get("status") == "training":  # its process died without a word
                earlier["status"] = "killed"
        periods.append(
            {
                "period": len(periods) + 1,
                "started": now_iso(),
                "ended": None,
                "first_batch": first_batch,
                "last_batch": first_batch,
                "watched": False,
                "status": "training",
                **extra,
            }
        )
        self.write_periods(periods)
        return len(periods)

    def update_period(self, period: int, **changes: Any) -> None:
        periods = self.read_periods()
        if not 0 < period <= len(periods):  # the file was damaged meanwhile: keep what we know
            return
        periods[period - 1].update(changes)
        self.write_periods(periods)


def parse_checkpoint_ref(ref: str) -> tuple[Path, int | None]:
    """``runs/<line>/<line>_v3@27500`` -> (run path, 27500); without ``@`` the batch is None."""
    path, sep, batch = str(ref).rpartition("@")
    if not sep:
        return Path(ref), None
    if not batch.isdigit():
        raise RunError(f"checkpoint reference {ref!r}: the part after '@' must be a batch number")
    return Path(path), int(batch)


def resolve_checkpoint(ref: str, root: Path | None = None) -> tuple[RunFolder, int, Path]:
    """``<run>@<batch>`` (or ``<run>`` for its latest) -> (run, batch, weights file)."""
    path, batch = parse_checkpoint_ref(ref)
    run = RunFolder.open(path, root)
    available = list_checkpoints(run.checkpoints)
    if not available:
        raise RunError(f"{run.path} has no checkpoint yet")
    if batch is None:
        batch = available[-1]
    elif batch not in available:
        nearest = sorted(sorted(available, key=lambda b: (abs(b - batch), b))[:4])
        raise RunError(
            f"{run.path} has no checkpoint at batch {batch}; nearest: "
            f"{', '.join(map(str, nearest))} ({len(available)} checkpoints, "
            f"{available[0]}-{available[-1]})"
        )
    return run, batch, run.checkpoints / f"batch_{batch}.safetensors"
