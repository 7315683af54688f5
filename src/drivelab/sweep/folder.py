"""What a sweep is on disk: its spec, Ray's experiment state, one ledger file per trial, results.

::

    sweeps/<name>/
      sweep.yaml          the spec as validated (base made absolute) + command-line overrides
      tune/               Ray Tune's experiment state (`Tuner.restore` reads it)
      trials/<trial>.json the ledger: status, run folder, result — written by the trial itself
      runs/<line>/...     every trial's ordinary drivelab run folder (`runs`, `card`, `eval`)
      results.md|csv|json, figures/   written by `drivelab sweep` (regenerated on resume)
      tune-checksums.json sha256 of Tune's pickled state as drivelab wrote it (`sweep.trust`)
      .sweep.lock         flock of the one driver running the sweep, with its pid

The ledger is drivelab's, not Ray's: a trial that finished is recognised from its own record
even when the driver was killed before Ray saved its state, so `--resume` never reruns it and
never touches its files.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from drivelab.config import ConfigError
from drivelab.config.yaml_text import read_yaml_file
from drivelab.outputs import check_output_dir, write_json, write_text
from drivelab.sweep.spec import SweepError

SPEC_FILE = "sweep.yaml"
LOCK_FILE = ".sweep.lock"
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
        path = path.expanduser().resolve()
        check_output_dir(path.parent, "--out")
        if path.exists() and not path.is_dir():
            raise SweepError(f"--out {path} is a file, not a folder: pick another --out")
        if path.exists() and any(path.iterdir()):
            raise SweepError(f"{path} exists: continue it with `drivelab sweep --resume "
                             f"{shlex.quote(str(path))}`, or pick another --out")

    @classmethod
    def create(cls, path: Path, spec: dict[str, Any], overrides: list[str]) -> SweepFolder:
        """A new sweep folder; an existing one is refused (continue it with ``--resume``).

        The path is made absolute: Tune needs one, and the resume hints print it.
        """
        path = path.expanduser().resolve()
        cls.check_new(path)
        folder = cls(path)
        folder.trials.mkdir(parents=True, exist_ok=True)
        folder.runs.mkdir(exist_ok=True)
        text = yaml.safe_dump({**spec, "cli_overrides": overrides}, sort_keys=False)
        write_text(folder.spec_path, text, flag="sweep.yaml")
        return folder

    @classmethod
    def open(cls, path: Path) -> SweepFolder:
        """An existing sweep folder, by any path (relative ones are made absolute, as for Tune)."""
        folder = cls(path.expanduser().resolve())
        if not folder.spec_path.is_file():
            raise SweepError(f"{path} is not a sweep folder (no {SPEC_FILE}): pass the folder "
                             "`drivelab sweep SPEC` made")
        return folder

    def read_spec(self) -> tuple[dict[str, Any], list[str]]:
        """The stored spec mapping and the command-line overrides it ran with."""
        try:
            raw = read_yaml_file(self.spec_path) or {}
        except ConfigError as exc:
            raise SweepError(f"{exc} (the sweep folder's own spec; was it edited?)") from None
        if not isinstance(raw, dict):
            raise SweepError(f"{self.spec_path}: expected the mapping `drivelab sweep` wrote")
        overrides = [str(o) for o in raw.pop("cli_overrides", None) or []]
        return raw, overrides

    @contextmanager
    def driving(self) -> Iterator[None]:
        """One driver per sweep folder, for its whole run: a second one fails at once.

        Two drivers would launch the same open trials into the same run folders. An fcntl flock
        on `LOCK_FILE` goes away with its process however it dies (a kill -9 leaves no stale
        lock: the next driver takes it over); the holder's pid is written into the file so the
        refusal can name it.
        """
        lock = self.path / LOCK_FILE
        try:
            # no link followed: a crafted folder's lock -> ~/.bashrc would be truncated below
            fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise SweepError(f"cannot take the sweep lock {lock} ({exc.strerror}): it must be a "
                             f"plain file (or none) in a writable sweep folder") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                who = f"pid {holder}" if holder.isdigit() else "another process"
                raise SweepError(f"{self.path} is being run by another drivelab sweep ({who}, lock "
                                 f"{lock}): wait for it to finish, or stop it first") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            yield
        finally:
            os.close(fd)

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
