"""What a sweep is on disk: its spec, Ray's experiment state, one ledger file per trial, results.

::

    sweeps/<name>/
      sweep.yaml          the spec as validated (base made absolute) + command-line overrides
      tune/               Ray Tune's experiment state (`Tuner.restore` reads it)
      trials/<trial>.json the ledger: status, run folder, result — written by the trial itself
      runs/<line>/...     every trial's ordinary drivelab run folder (`runs`, `card`, `eval`)
      results.md|csv|json, figures/   written by `drivelab sweep` (regenerated on resume)

The ledger is drivelab's, not Ray's: a trial that finished is recognised from its own record
even when the driver was killed before Ray saved its state, so `--resume` never reruns it and
never touches its files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from drivelab.outputs import check_output_dir, write_json, write_text
from drivelab.sweep.spec import SweepError

SPEC_FILE = "sweep.yaml"
#: Trial states in the ledger; ``failed`` is final (e.g. a NaN loss), like ``finished``.
FINAL = ("finished", "failed")


@dataclass(frozen=True)
class SweepFolder:
    path: Path

    @property
    def spec_path(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def tune(self) -> Path:
        return self.path / "tune"

    @property
    def trials(self) -> Path:
        return self.path / "trials"

    @property
    def runs(self) -> Path:
        return self.path / "runs"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @staticmethod
    def check_new(path: Path) -> None:
        """Refuse a sweep folder that cannot be made new (checked before Ray starts)."""
        check_output_dir(path.parent if str(path.parent) else Path("."), "--out")
        if path.exists() and any(path.iterdir()):
            raise SweepError(f"{path} exists: continue it with `drivelab sweep --resume {path}`, or "
                             "pick another --out")

    @classmethod
    def create(cls, path: Path, spec: dict[str, Any], overrides: list[str]) -> SweepFolder:
        """A new sweep folder; an existing one is refused (continue it with ``--resume``)."""
        cls.check_new(path)
        folder = cls(path)
        folder.trials.mkdir(parents=True, exist_ok=True)
        folder.runs.mkdir(exist_ok=True)
        text = yaml.safe_dump({**spec, "cli_overrides": overrides}, sort_keys=False)
        write_text(folder.spec_path, text, flag="sweep.yaml")
        return folder

    @classmethod
    def open(cls, path: Path) -> SweepFolder:
        folder = cls(path)
        if not folder.spec_path.is_file():
            raise SweepError(f"{path} is not a sweep folder (no {SPEC_FILE}): pass the folder "
                             "`drivelab sweep SPEC` made")
        return folder

    def read_spec(self) -> tuple[dict[str, Any], list[str]]:
        """The stored spec mapping and the command-line overrides it ran with."""
        raw = yaml.safe_load(self.spec_path.read_text(encoding="utf-8")) or {}
        overrides = [str(o) for o in raw.pop("cli_overrides", None) or []]
        return raw, overrides

    # ------------------------------------------------------------------ the ledger
    def trial_path(self, name: str) -> Path:
        return self.trials / f"{name}.json"

    def read_trial(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.trial_path(name).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_trial(self, name: str, record: dict[str, Any]) -> None:
        """Atomic: a reader (the driver, `--status`) sees the old record or the new one."""
        write_json(self.trial_path(name), record, force=True, flag="ledger")

    def ledger(self) -> dict[str, dict[str, Any]]:
        records = {}
        for path in sorted(self.trials.glob("*.json")) if self.trials.is_dir() else []:
            record = self.read_trial(path.stem)
            if record is not None:
                records[path.stem] = record
        return records
