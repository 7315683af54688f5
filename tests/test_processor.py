"""The processor: its typed state file, old runs' facts, the shared sample layout, `check_fit`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drivelab.config import ConfigError, ExperimentConfig, dump_config, load_config
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.models import build_policy
from drivelab.processor.fit import DataSpec, FitError, PolicyNeeds, check_fit
from drivelab.processor.layout import DeltaActions, SampleStream
from drivelab.processor.pipeline import InputPipeline, normalize_frames
from drivelab.processor.state import PROCESSOR_FILE, ProcessorError, ProcessorState
from drivelab.runs.folder import RunFolder
from drivelab.sim.base import Observation
from drivelab.train import train
from drivelab.train.inputs import open_inputs

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "carracing" / "pilotnet.yaml"


def config_for(dataset: Path, *extra: str) -> ExperimentConfig:
    return load_config(CONFIG, [
        f"data.path={dataset}", "data.input_size=[64,64]", "data.workers=0", "train.batch_size=8",
        "data.normalization=scaled", "data.frames=2", "model.history.signals=[speed, purpose]",
        "model.heads=[{output: steering, widths: [8], standardize: true}, "
        "{output: accel_brake, widths: [8]}]",
        *extra,
    ])


def old_facts(state: ProcessorState) -> dict[str, object]:
    """The ``data`` facts a run recorded in ``run.json`` before ``processor.json`` existed."""
    return {
        "path": "somewhere.zarr",
        "frame_shape": list(state.frames.source_shape),
        "train_samples": 1,
        "val_samples": 0,
        "history_sizes": dict(state.history.sizes),
        "frame_mean": list(state.frames.mean) if state.frames.mean else None,
        "frame_std": list(state.frames.std) if state.frames.std else None,
        "history_mean": list(state.history.mean),
        "history_std": list(state.history.std),
        "target_mean": dict(state.targets.mean),
        "target_std": dict(state.targets.std),
    }


def test_normalization_modes() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).repeat(1, 6, 1, 1)
    assert normalize_frames(x, "none").max() == 1.0
    shifted = normalize_frames(x, "shifted")
    assert shifted.min() == -0.5 and shifted.max() == 0.5
    scaled = normalize_frames(x, "scaled", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    assert scaled.min() == -1.0 and scaled.max() == 1.0
    with pytest.raises(ProcessorError, match="needs the dataset"):
        normalize_frames(x, "scaled")


def test_state_holds_the_training_statistics_and_round_trips_exactly(small_dataset: Path) -> None:
    config = config_for(small_dataset)
    state = open_inputs(config).processor
    store = DatasetStore.open(small_dataset)
    moments = store.moments(store.split_episodes("train"))
    assert state.frames.source_shape == tuple(store.meta.frame_shape) and state.frames.stack == 2
    assert state.frames.mean == tuple(m / 255.0 for m in moments["frames"].mean)
    assert state.history.sizes == {"speed": 1, "purpose": 2} and len(state.history.std) == 3
    assert state.targets.mean == {"steering": moments["actions/steering"].mean[0]}
    assert state.targets.scales() == state.targets.std
    again = ProcessorState.from_json(state.to_json())
    assert again == state and again.to_json() == state.to_json()
    # a run made before processor.json: the same numbers from run.json's data facts
    assert ProcessorState.from_run_facts(config, old_facts(state)) == state


def test_a_damaged_or_newer_state_file_is_one_error_line(small_dataset: Path) -> None:
    text = open_inputs(config_for(small_dataset)).processor.to_json()
    newer = json.loads(text) | {"version": 2}
    with pytest.raises(ProcessorError, match=r"processor version 2; this drivelab reads version 1"):
        ProcessorState.from_json(json.dumps(newer))
    with pytest.raises(ProcessorError, match="is not JSON"):
        ProcessorState.from_json(text[:40])
    no_stats = json.loads(text)
    no_stats["frames"]["mean"] = None
    with pytest.raises(ProcessorError, match=r"frames: .*'scaled' needs the frame mean/std"):
        ProcessorState.from_json(json.dumps(no_stats))


def test_a_run_saves_its_state_and_old_runs_still_load(small_dataset: Path, tmp_path: Path) -> None:
    config = config_for(small_dataset, "train.max_batches=2", "train.checkpoint_every=2",
                        "train.val_every=null", "train.warmup_batches=0")
    run = train(config, runs_root=tmp_path).run
    saved = ProcessorState.from_json((run.path / PROCESSOR_FILE).read_text())
    assert saved == open_inputs(config).processor
    assert "frame_mean" not in run.read_status()["data"]  # the statistics have one home
    runtime = PolicyRuntime.from_ref(str(run.path))
    assert runtime.processor == saved

    # the same run as an older drivelab left it: statistics in run.json, no processor.json
    (run.path / PROCESSOR_FILE).unlink()
    run.write_status("finished", data=old_facts(saved))
    old = PolicyRuntime.from_ref(str(run.path))
    assert old.processor == saved
    store = DatasetStore.open(small_dataset)
    group = store.episode(0)
    frames, telemetry = group["frames"][:], {s: group[f"telemetry/{s}"][:] for s in ("speed", "purpose")}
    runtime.reset()
    old.reset()
    for t in range(5):
        obs = Observation(frames[t], {s: v[t] for s, v in telemetry.items()})
        a, b = runtime.observe(obs), old.observe(obs)
        assert all(torch.equal(a[k], b[k]) for k in a)
        x, y = runtime.pipeline(a), old.pipeline(b)
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


def test_an_old_run_without_data_facts_is_refused(small_dataset: Path, tmp_path: Path) -> None:
    config = config_for(small_dataset)
    run = RunFolder(tmp_path / "line_v1")
    run.path.mkdir()
    run.config_path.write_text(dump_config(config), encoding="utf-8")
    run.write_status("finished")
    with pytest.raises(DrivelabError, match="lacks the data facts a policy needs to drive"):
        run.read_processor(config)


def test_stream_and_loader_share_the_layout(small_dataset: Path) -> None:
    """Step by step (runtime) and vectorised (loader): the same samples, the same delta targets."""
    store = DatasetStore.open(small_dataset)
    ds = EpisodeFrameDataset(store, "train", ["steering"], frames=3, history_signals=["speed", "purpose"],
                             history_length=4, delta_outputs=["steering"])
    group = store.episode(ds.episodes[0].index)
    stream = SampleStream(3, ["speed", "purpose"], 4)
    for t in range(8):
        sample = stream.push(group["frames"][t], {s: group[f"telemetry/{s}"][t] for s in ("speed", "purpose")})
        assert np.array_equal(sample["frames"][0], ds[t]["frames"].numpy())
        assert np.array_equal(sample["history"][0], ds[t]["history"].numpy())
    delta = DeltaActions(("steering",), {"steering": (-0.5, 0.5)})
    last = np.asarray(group["telemetry/steering"][:6])
    change = ds.__getitems__(list(range(6)))["target/steering"].numpy()
    assert np.array_equal(change, np.asarray(group["actions/steering"][:6]) - last)
    driven = [delta.actions({"steering": float(change[t, 0])}, {"steering": last[t]})["steering"] for t in range(6)]
    expected = np.clip(np.asarray(group["actions/steering"][:6, 0], np.float64), -0.5, 0.5)
    assert np.allclose(driven, expected, atol=1e-6)


def test_input_pipeline_follows_the_state(small_dataset: Path) -> None:
    state = open_inputs(config_for(small_dataset, "data.crop={top: 10}")).processor
    pipeline = InputPipeline(state)
    frames = torch.randint(0, 255, (2, 6, 96, 96), dtype=torch.uint8)
    out, history = pipeline({"frames": frames, "history": torch.zeros(2, 4, 3)})
    assert out.shape == (2, 6, 64, 64) and pipeline.crop and pipeline.resize
    assert torch.allclose(history[0, 0], -torch.tensor(state.history.mean) / torch.tensor(state.history.std))


def test_input_pipeline_gives_the_trainers_layout_whatever_the_loaders(small_dataset: Path) -> None:
    """The loader's [B, C, H, W] frames are HWC in memory (NHWC already). A convolution runs NHWC
    when its input is, so NCHW training needs the copy; inference (None) keeps what it gets."""
    state = open_inputs(config_for(small_dataset)).processor
    hwc = torch.randint(0, 255, (2, 96, 96, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    assert hwc.is_contiguous(memory_format=torch.channels_last)
    nchw = InputPipeline(state, channels_last=False).frames(hwc)
    nhwc = InputPipeline(state, channels_last=True).frames(hwc)
    kept = InputPipeline(state).frames(hwc)
    assert nchw.is_contiguous() and not nchw.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    assert kept.stride() == InputPipeline(state).frames(hwc).stride()
    assert torch.equal(nchw, nhwc) and torch.equal(nchw, kept)


# ---------------------------------------------------------------------------- check_fit
def test_check_fit_names_what_differs(small_dataset: Path) -> None:
    config = config_for(small_dataset)
    spec = DataSpec.of_dataset(DatasetStore.open(small_dataset))
    assert check_fit(spec, PolicyNeeds.of_config(config)) == {"speed": 1, "purpose": 2}

    def refused(needs: PolicyNeeds, data: DataSpec = spec) -> str:
        with pytest.raises(FitError) as info:
            check_fit(data, needs, who="run_v1@6")
        message = str(info.value)
        assert "\n" not in message
        return message

    outputs = refused(PolicyNeeds(outputs=("steering", "throttle")))
    assert "no one-value action ['throttle']" in outputs and "no action for the output(s) ['throttle']" in outputs
    assert "of run_v1@6 (its actions: steering[1], accel_brake[1])" in outputs
    assert "last executed action of the delta head(s) ['gear']" in refused(PolicyNeeds(delta_outputs=("gear",)))
    trained = refused(PolicyNeeds(trained_shape=(64, 64, 3)))
    assert "run_v1@6 was trained on [64, 64, 3] frames" in trained and "gives [96, 96, 3]" in trained
    history = refused(PolicyNeeds(history={"gyro": 1}))
    assert history.startswith("model.history.signals: gyro not recorded in ")
    assert "lacks the history telemetry of run_v1@6 (gyro[1])" in history and "history signal(s) ['gyro']" in history
    assert "signal_sizes.purpose: 1, but " in refused(PolicyNeeds(history={"purpose": 1}))
    crop = PolicyNeeds.of_config(config_for(small_dataset, "data.crop={left: 50, right: 46}"))
    assert "leaves nothing of the dataset's 96x96 frames" in refused(crop)
    grey = DataSpec("grey.zarr", (96, 96, 1), spec.actions, spec.telemetry)
    assert refused(PolicyNeeds(rgb=True), grey) == "grey.zarr holds 1-channel frames; policies read RGB (3)"


def test_model_factory_asks_check_fit(small_dataset: Path) -> None:
    config = config_for(small_dataset, "model.history.signal_sizes={purpose: 2}")
    with pytest.raises(ConfigError, match=r"model\.history\.signals: 'purpose' is not a recorded signal"):
        build_policy(config.model, config.frame_shape, {"speed": 1})
    with pytest.raises(ConfigError, match=r"signal_sizes\.purpose: 2, but the data records 1"):
        build_policy(config.model, config.frame_shape, {"speed": 1, "purpose": 1})
