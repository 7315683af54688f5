"""Shared test set-up: headless pygame, and a small real CarRacing dataset made once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: The demo's config: every training test starts from it (or names another one).
PILOTNET = CONFIGS / "carracing" / "pilotnet.yaml"


def quick(dataset: Path, *extra: str, size: int = 64, batch_size: int = 8) -> list[str]:
    """Overrides that make a config train in seconds on a CPU: the test's small dataset, small
    square frames, in-process loading and small batches; ``extra`` comes last and wins.

    ``DRIVELAB_TEST_PRECISION`` (e.g. ``32`` or ``bf16-mixed``) forces ``train.precision``,
    so a run of the suite shows what a CPU kind without (or with) native bf16 would compute.
    """
    precision = os.environ.get("DRIVELAB_TEST_PRECISION")
    forced = [f"train.precision={precision}"] if precision else []
    return [f"data.path={dataset}", f"data.input_size=[{size},{size}]", "data.workers=0",
            f"train.batch_size={batch_size}", *forced, *extra]


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


def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """The `drivelab` command line in this process: same exit code and stderr as `run_cli`.

    For refusals and reports that need no process of their own (no signals, no workers to
    kill): it saves the ~5 s of interpreter + torch start-up each subprocess pays.
    """
    import contextlib
    import io

    import torch

    from drivelab.cli import main

    out, err = io.StringIO(), io.StringIO()
    # what a verb may change in its process is put back, so no later test inherits it (a verb
    # that set torch's thread pool once made a later bit-identical test compare 1 thread with 2)
    saved_argv, saved_env, saved_threads = sys.argv, dict(os.environ), torch.get_num_threads()
    sys.argv, os.environ["COLUMNS"] = ["drivelab", *args], "160"
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(["drivelab", *args], returncode, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session", autouse=True)
def _private_config_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Per-user files drivelab makes (the sweep trust key, the layout probe's cache) go to test
    folders, not ``~``."""
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache-home"))


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three short real CarRacing expert episodes (noise on), one of them in val."""
    from drivelab.data.collect import CollectPlan, collect

    out = tmp_path_factory.mktemp("data") / "small.zarr"
    collect(out, CollectPlan(env="carracing", seed=7, noise=0.2, max_steps=80), episodes=3,
            workers=1, val_episodes=1)
    return out
