"""Fuzzing the two doors users type into: config overrides and command-line flags.

Whatever hypothesis generates, the answer is a config, a `DrivelabError` (one line for the
user) or a usage error from the command-line parser, never another exception (a traceback).
Runs in-process (typer's CliRunner) so a few hundred inputs take seconds.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from drivelab.cli import app
from drivelab.config import load_config
from drivelab.errors import DrivelabError
from drivelab.models.summary import summarize_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "carracing" / "pilotnet.yaml"
KEYS = [
    "seed", "line", "task", "data.path", "data.input_size", "data.frames", "data.normalization", "data.crop",
    "data.workers", "data.balance.scheme", "data.balance.bins", "data.augment.flip", "data.augment.translate",
    "model.backbone.name", "model.backbone.pool", "model.backbone.pretrained", "model.neck",
    "model.heads", "model.heads.steering.kind", "model.heads.steering.bins", "model.heads.steering.weight",
    "model.history", "model.history.length", "model.history.signals", "model.recurrent.hidden",
    "model.freeze", "model.init_from", "train.lr", "train.batch_size", "train.max_batches", "train.epochs",
    "train.optimizer", "train.warmup_batches", "train.precision", "train.devices", "train.bptt.mode",
    "no.such.key", "train", "data", "",
]
SCALARS = st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["null", "true", "false", "[]", "{}", "[1,2]", "[0,0]", "[-1,5]", "[100000,100000]",
                     "{a: 1}", "'", "[", "{", "*", ":", "- x", "nan", "inf", "adam", "resnet18", "none",
                     "v3", "classification", "bf16-mixed", "[64, 64]", "[[1]]", "~", "!!python/object:os.system"]),
    st.text(max_size=12),
)
OVERRIDES = st.lists(st.tuples(st.sampled_from(KEYS), SCALARS).map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OVERRIDES)
def test_config_overrides_never_raise_anything_but_a_config_error(overrides: list[str]) -> None:
    try:
        config = load_config(CONFIG, overrides)
    except DrivelabError:
        return
    with contextlib.suppress(DrivelabError):  # a valid config builds, or is refused with figures
        summarize_config(config, with_shapes=False)


runner = CliRunner()


def _no_traceback(args: list[str]) -> None:
    result = runner.invoke(app, args)
    exc = result.exception
    assert exc is None or isinstance(exc, DrivelabError | SystemExit), (args, repr(exc))


FLAG_VALUES = st.one_of(st.integers(-3, 3).map(str), st.sampled_from(["-1", "0", "1e9", "nan", "x", "", "--"]),
                        st.text(max_size=6))


@pytest.fixture(scope="module")
def dataset(small_dataset: Path) -> Path:
    return small_dataset


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scheme=st.one_of(st.sampled_from(["none", "v1", "v2", "v3", "v4", "inverse_frequency", "normalized_output"]),
                        st.text(max_size=6)),
       bins=st.one_of(st.sampled_from(["v1", "v2"]), st.text(max_size=4)),
       power=FLAG_VALUES, batch=FLAG_VALUES, candidates=FLAG_VALUES, output=st.text(max_size=8))
def test_data_balance_flags(dataset: Path, scheme: str, bins: str, power: str, batch: str, candidates: str,
                            output: str) -> None:
    args = ["data", "balance", str(dataset), "--scheme", scheme, "--bins", bins, "--power", power,
            "--batch-size", batch, "--candidates", candidates, "--skip-empty"]
    _no_traceback(args)
    _no_traceback([*args, "--output", output])


@settings(max_examples=60, deadline=None)
@given(episodes=FLAG_VALUES, workers=FLAG_VALUES, seed=FLAG_VALUES, noise=FLAG_VALUES, hold=FLAG_VALUES,
       steps=FLAG_VALUES, env=st.text(max_size=10).filter(lambda e: e.strip().lower() != "carracing"))
def test_collect_flags_refuse_before_any_work(tmp_path_factory: pytest.TempPathFactory, episodes: str,
                                              workers: str, seed: str, noise: str, hold: str, steps: str,
                                              env: str) -> None:
    out = tmp_path_factory.mktemp("fuzz") / "d.zarr"
    _no_traceback(["collect", "--out", str(out), "--env", env, "--episodes", episodes, "--workers", workers,
                   "--seed", seed, "--noise", noise, "--noise-hold", hold, "--max-steps", steps])
    assert not out.exists() or not any((out / "episodes").glob("*"))


@settings(max_examples=60, deadline=None)
@given(run=st.text(max_size=12), episodes=FLAG_VALUES, seed=FLAG_VALUES, workers=FLAG_VALUES,
       steps=FLAG_VALUES, baseline=st.text(max_size=8).filter(lambda b: b not in ("expert", "random")),
       offline=st.one_of(st.none(), st.sampled_from(["train", "val", "test", "bogus"])))
def test_eval_flags(tmp_path_factory: pytest.TempPathFactory, run: str, episodes: str, seed: str, workers: str,
                    steps: str, baseline: str, offline: str | None) -> None:
    runs = tmp_path_factory.mktemp("runs")
    args = ["eval", run, "--runs", str(runs), "--episodes", episodes, "--seed", seed, "--workers", workers,
            "--max-steps", steps, "--baseline", baseline]
    _no_traceback(args + (["--offline", offline] if offline else []))
