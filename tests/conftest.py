"""Shared test set-up: headless pygame, and a small real CarRacing dataset made once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `drivelab` command line in a subprocess (real exit codes, real stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "drivelab.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "SDL_VIDEODRIVER": "dummy", "COLUMNS": "160"},
    )


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three short real CarRacing expert episodes (noise on), one of them in val."""
    from drivelab.data.collect import CollectPlan, collect

    out = tmp_path_factory.mktemp("data") / "small.zarr"
    collect(out, CollectPlan(env="carracing", seed=7, noise=0.2, max_steps=80), episodes=3,
            workers=1, val_episodes=1)
    return out
