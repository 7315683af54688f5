"""Training speed settings: precision (auto/bf16/fp32), channels_last, compile, the RAM cache,
and bf16 inference: resolved once, recorded, resumable bit-identically, refused with figures."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import PILOTNET, quick, run_cli_here
from drivelab.config import ConfigError, load_config
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.runs.checkpoints import list_checkpoints, load_weights
from drivelab.train import speed as speed_module
from drivelab.train import train
from drivelab.train.speed import resolve_precision

CONFIG = PILOTNET


def tiny(dataset: Path, *extra: str) -> list[str]:
    return quick(
        dataset,
        "train.log_every=2",
        "train.warmup_batches=2",
        *extra,
        batch_size=8,
    )


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this CPU computes bf16 natively (it runs anyway, emulated where it does not)."""
    monkeypatch.setattr(speed_module, "bf16_support", lambda device: (True, "test: bf16 assumed"))


@pytest.fixture
def fp32_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed_module, "bf16_support", lambda device: (False, "test: no bf16 units"))


# ---------------------------------------------------------------------------- config + resolution
def test_precision_spellings_and_speed_keys_are_validated() -> None:
    assert load_config(CONFIG, ["train.precision=32"]).train.precision == "32-true"
    assert load_config(CONFIG, ["train.precision=bf16"]).train.precision == "bf16-mixed"
    assert load_config(CONFIG, ["train.precision=16"]).train.precision == "16-mixed"
    cfg = load_config(CONFIG, ["train.channels_last=false", "train.compile=true", "data.cache=none"])
    assert (cfg.train.channels_last, cfg.train.compile, cfg.data.cache) == (False, True, "none")
    for bad in ("train.precision=8", "train.channels_last=maybe", "data.cache=disk"):
        with pytest.raises(ConfigError) as info:
            load_config(CONFIG, [bad])
        assert bad.split("=")[0] in str(info.value)


def test_auto_picks_bf16_only_where_the_device_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed_module, "bf16_support", lambda d: (True, "AMX"))
    assert resolve_precision("auto", "cpu") == ("bf16-mixed", ["precision: auto -> bf16-mixed (AMX)"])
    monkeypatch.setattr(speed_module, "bf16_support", lambda d: (False, "no AMX"))
    chosen, notes = resolve_precision("auto", "cpu")
    assert chosen == "32-true" and "no AMX" in notes[0]
    chosen, notes = resolve_precision("bf16-mixed", "cpu")  # asked for, unsupported: one line
    assert chosen == "32-true" and "bf16-mixed requested" in notes[0] and len(notes) == 1
    chosen, notes = resolve_precision("16-mixed", "cpu")
    assert chosen == "32-true" and "needs a GPU" in notes[0]
    assert resolve_precision("32-true", "cpu") == ("32-true", [])
    # a resumed auto run keeps its recorded precision where the device still supports it
    monkeypatch.setattr(speed_module, "bf16_support", lambda d: (True, "AMX"))
    assert resolve_precision("auto", "cpu", recorded="32-true")[0] == "32-true"


def test_the_real_probe_agrees_with_torch() -> None:
    ok, why = speed_module.bf16_support("cpu")
    assert ok == (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    assert why


# ---------------------------------------------------------------------------- training
def test_bf16_run_is_recorded_kept_fp32_and_resumes_bit_identically(
    small_dataset: Path, tmp_path: Path, bf16_cpu: None, caplog: pytest.LogCaptureFixture
) -> None:
    n = 4
    cfg = load_config(CONFIG, tiny(small_dataset, "train.precision=auto", f"train.max_batches={2 * n}",
                                   f"train.checkpoint_every={n}", "train.val_every=3"))
    straight = train(cfg, runs_root=tmp_path / "straight")
    info = straight.run.read_status()
    assert info["speed"]["precision"] == "bf16-mixed" and info["speed"]["channels_last"] is True
    assert straight.run.read_periods()[0]["speed"]["precision"] == "bf16-mixed"
    # drivelab says what it chose (run.json, the card): Fabric's own info line stays out of
    # stderr, which belongs to the one line a refusal prints
    assert not [r for r in caplog.records if "Automatic Mixed Precision" in r.getMessage()]
    last = straight.run.checkpoints / f"batch_{2 * n}.safetensors"
    kept = load_weights(last)  # checkpoints stay fp32 whatever the precision
    assert {v.dtype for v in kept.values() if v.is_floating_point()} == {torch.float32}

    # The same run cut after batch n (its later checkpoint removed) and resumed.
    cut = tmp_path / "cut" / straight.run.path.name
    shutil.copytree(straight.run.path, cut)
    for later in cut.glob(f"checkpoints/batch_{2 * n}*"):
        later.unlink()
    resumed = train(cfg, runs_root=tmp_path / "cut", resume=cut)
    assert resumed.first_batch == n and list_checkpoints(cut / "checkpoints") == [n, 2 * n]
    a, b = load_weights(last), load_weights(cut / "checkpoints" / f"batch_{2 * n}.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.speed is not None and resumed.speed.precision == "bf16-mixed"


def test_compile_auto_follows_the_measured_break_even() -> None:
    """``compile: auto`` compiles only runs whose work passes the measured break-even: the old
    demo (6,000 x 64 at 96x96) yes, the demo recipe (1,500 x 32 at 64x64) and epoch runs no."""
    from drivelab.train.speed import COMPILE_PAYS_AFTER, auto_compile

    assert auto_compile(6000, 64, (96, 96)) and not auto_compile(1500, 32, (64, 64))
    assert not auto_compile(None, 64, (96, 96))
    at = COMPILE_PAYS_AFTER // (64 * 96 * 96)
    assert auto_compile(at, 64, (96, 96)) and not auto_compile(at - 1, 64, (96, 96))
    assert load_config(CONFIG).train.compile == "auto"


def test_unsupported_bf16_falls_back_with_one_line(
    small_dataset: Path, tmp_path: Path, fp32_cpu: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(CONFIG, tiny(small_dataset, "train.precision=bf16", "train.max_batches=2",
                                   "train.channels_last=false", "data.val_split=null"))
    result = train(cfg, runs_root=tmp_path)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "bf16-mixed requested" in notes[0] and "32-true" in notes[0]
    assert result.run.read_status()["speed"] == {
        "precision": "32-true", "channels_last": False, "compile": False, "device": "cpu",
        "notes": [notes[0].removeprefix("note: ")],
    }


def train_pair(dataset: Path, root: Path, a: str, b: str) -> tuple[Any, Any, dict, dict]:
    """Two 3-batch fp32 runs differing in one override: (results, weights at batch 3)."""
    common = ["train.precision=32", "train.max_batches=3", "data.val_split=null"]
    results = [train(load_config(CONFIG, tiny(dataset, *common, o)), root / n) for o, n in ((a, "a"), (b, "b"))]
    weights = [load_weights(r.run.checkpoints / "batch_3.safetensors") for r in results]
    return results[0], results[1], weights[0], weights[1]


def test_channels_last_trains_the_same_policy_within_float_noise(small_dataset: Path, tmp_path: Path) -> None:
    a, b, wa, wb = train_pair(small_dataset, tmp_path, "train.channels_last=true", "train.channels_last=false")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert a.run.read_status()["speed"]["channels_last"] and not b.run.read_status()["speed"]["channels_last"]


def test_compile_trains_and_its_checkpoints_drive_uncompiled(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dynamo + AOT autograd for real, without inductor's C++ code generation (a minute on a
    # 2-core machine); benchmarks/trainer.py measures the real compiled speed.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    cfg = load_config(CONFIG, tiny(small_dataset, "train.compile=true", "train.precision=32",
                                   "train.max_batches=2", "data.val_split=null"))
    result = train(cfg, runs_root=tmp_path)
    weights = load_weights(result.run.checkpoints / "batch_2.safetensors")
    assert not any(k.startswith("_orig_mod") for k in weights)  # plain names: any runtime loads them
    assert result.run.read_status()["speed"]["compile"] is True


# ---------------------------------------------------------------------------- RAM cache
def test_ram_cache_serves_the_same_samples(small_dataset: Path) -> None:
    store = DatasetStore.open(small_dataset)
    streamed = EpisodeFrameDataset(store, "train", ["steering", "accel_brake"], 2, ["speed"], 4)
    cached = EpisodeFrameDataset(store, "train", ["steering", "accel_brake"], 2, ["speed"], 4)
    cached.preload()
    assert cached._cache.misses == len(cached.episodes)  # every episode decoded once, up front
    idx = np.random.default_rng(0).integers(0, len(streamed), 40).tolist()
    x, y = streamed.__getitems__(idx), cached.__getitems__(idx)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert cached._cache.misses == len(cached.episodes)  # nothing decoded again


def test_ram_cache_that_does_not_fit_is_refused_with_figures(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("drivelab.data.loader.available_bytes", lambda: 1 << 20)
    cfg = load_config(CONFIG, tiny(small_dataset, "data.cache=ram", "train.max_batches=2"))
    with pytest.raises(DrivelabError) as info:
        train(cfg, runs_root=tmp_path / "runs")
    text = str(info.value)
    assert "data.cache=ram" in text and "1.0 MiB" in text and "data.cache=none" in text
    assert not (tmp_path / "runs").exists()  # refused before a run folder was claimed


def test_ram_cache_trains_like_streaming(small_dataset: Path, tmp_path: Path) -> None:
    _, _, wa, wb = train_pair(small_dataset, tmp_path, "data.cache=ram", "data.cache=none")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------------------- inference + card
def test_bf16_inference_gives_fp32_actions_close_to_fp32(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drivelab.evaluate import runtime as runtime_module
    from drivelab.evaluate.runtime import PolicyRuntime
    from drivelab.sim import make_env

    cfg = load_config(CONFIG, tiny(small_dataset, "train.max_batches=4", "data.val_split=null"))
    run = train(cfg, runs_root=tmp_path).run
    monkeypatch.setattr(runtime_module, "bf16_support", lambda device: (True, "test"))
    fp32 = PolicyRuntime.from_ref(str(run.path), tmp_path, precision="32")
    bf16 = PolicyRuntime.from_ref(str(run.path), tmp_path, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("32", "bf16")
    env = make_env("carracing", max_steps=30)
    try:
        obs = env.reset(seed=10_000)
        for _ in range(5):
            a, b = fp32.act(obs), bf16.act(obs)
            assert a.keys() == b.keys() and all(isinstance(v, float) for v in b.values())
            assert all(abs(a[k] - b[k]) < 0.05 for k in a), (a, b)
            obs = env.step(np.array([a.get("steering", 0.0), a.get("accel_brake", 0.0)], np.float32)).observation
    finally:
        env.close()


def test_eval_precision_flag_is_checked_in_one_line(tmp_path: Path) -> None:
    result = run_cli_here("eval", "--baseline", "random", "--precision", "fp8", "--episodes", "1",
                     "--runs", str(tmp_path))
    assert result.returncode == 2 and "--precision 'fp8' is unknown" in result.stderr
    assert "Traceback" not in result.stderr


def test_auto_channels_last_follows_the_measured_rule() -> None:
    """Where no probe runs: NHWC for a conv policy (measured faster in every row of
    benchmarks/layout.py), never without a convolution."""
    from drivelab.train.speed import auto_channels_last

    assert auto_channels_last(True, "bf16-mixed", "cpu") and auto_channels_last(True, "32-true", "cuda")
    assert auto_channels_last(True, "32-true", "cpu")
    assert not auto_channels_last(False, "bf16-mixed", "cuda")


def _small_policy() -> torch.nn.Module:
    from drivelab.models.factory import build_policy

    cfg = load_config(CONFIG, ["data.input_size=[64,64]", "model.history=null"])
    return build_policy(cfg.model, cfg.frame_shape)


def test_the_layout_probe_times_both_formats_once_per_machine_and_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run of a shape times NCHW and NHWC and caches the speed-up; the next reads it.
    Neither changes torch's random state, so a cached and a probed run train the same policy."""
    from drivelab.train import layout_probe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    policy = _small_policy()
    shape = (4, *policy.frame_shape)
    rng = torch.get_rng_state()
    first = layout_probe.probe_channels_last(policy.backbone, shape, "32-true", "cpu", default=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not first.cached and first.speedup > 0
    entries = json.loads((tmp_path / "drivelab" / "layout_probe.json").read_text())
    (key, entry), = entries.items()
    assert "x".join(map(str, shape)) in key and "32-true" in key and entry["nhwc_speedup"] == round(first.speedup, 4)
    again = layout_probe.probe_channels_last(policy.backbone, shape, "32-true", "cpu", default=False)
    assert again.cached and again.speedup == round(first.speedup, 4)
    assert again.channels_last == first.channels_last
    assert "cached probe" in again.note("32-true", shape)
    other = layout_probe.probe_channels_last(policy.backbone, (8, *policy.frame_shape), "32-true", "cpu", False)
    assert not other.cached and len(json.loads((tmp_path / "drivelab" / "layout_probe.json").read_text())) == 2


@pytest.mark.parametrize(("speedup", "default", "chosen"), [
    (1.30, False, True), (0.70, True, False), (1.02, False, False), (0.98, True, True)])
def test_the_probe_overrules_the_rule_only_beyond_its_margin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, speedup: float, default: bool, chosen: bool
) -> None:
    from drivelab.train import layout_probe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(layout_probe, "time_formats", lambda *_a: speedup)
    verdict = layout_probe.probe_channels_last(_small_policy().backbone, (4, 3, 64, 64), "32-true", "cpu", default)
    assert verdict.channels_last is chosen and verdict.speedup == speedup


def test_an_unreadable_cache_costs_a_probe_not_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drivelab.train import layout_probe

    (tmp_path / "drivelab").mkdir()
    (tmp_path / "drivelab" / "layout_probe.json").write_text("{not json")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(layout_probe, "time_formats", lambda *_a: 1.5)
    assert layout_probe.probe_channels_last(_small_policy().backbone, (4, 3, 64, 64), "32-true", "cpu", False).channels_last
    assert len(json.loads((tmp_path / "drivelab" / "layout_probe.json").read_text())) == 1


def test_channels_last_auto_is_probed_recorded_and_kept_on_resume(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fp32_cpu: None
) -> None:
    """A probe that finds NCHW faster turns NHWC off (the rule's choice), run.json says why, and
    a resume keeps the recorded layout whatever the cache says later."""
    from drivelab.train import layout_probe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(layout_probe, "time_formats", lambda *_a: 0.8)
    cfg = load_config(CONFIG, tiny(small_dataset, "train.max_batches=4", "train.checkpoint_every=2",
                                   "train.precision=32-true"))
    result = train(cfg, runs_root=tmp_path / "runs")
    assert result.speed is not None and not result.speed.channels_last
    status = result.run.read_status()["speed"]
    assert status["channels_last"] is False and any("NHWC 0.80x NCHW" in n for n in status["notes"])
    shutil.rmtree(tmp_path / "cache")
    monkeypatch.setattr(layout_probe, "time_formats", lambda *_a: 2.0)
    for later in result.run.checkpoints.glob("batch_4*"):  # cut after batch 2, as a crash would
        later.unlink()
    resumed = train(cfg, runs_root=tmp_path / "runs", resume=result.run.path)
    assert resumed.speed is not None and not resumed.speed.channels_last
    assert "recorded off" in " ".join(resumed.speed.notes)
