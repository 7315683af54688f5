"""Recurrent policies trained over sequences: F-BPTT, WW-TBPTT and S-TBPTT (seed 004).

The samplers are checked on synthetic episode lengths (pure functions, no data); the sequence
reader, the loop, resume and the runtime on the session's small real CarRacing dataset (3
episodes x 80 steps, one in val) at 32x32 input, a few batches each.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import quick, run_cli_here
from drivelab.config import ConfigError, load_config
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.data.store import DatasetStore
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.models import build_policy
from drivelab.models.recurrent import STATE_KEY, RecurrentPolicy
from drivelab.order.sequences import (
    BPTTWarning,
    FullSampler,
    SequenceError,
    SlidingSampler,
    WindowSampler,
    warn_if_cut_drops,
)
from drivelab.runs.checkpoints import (
    list_checkpoints,
    load_trainer_state,
    load_weights,
    state_path,
    weights_path,
)
from drivelab.runs.metrics import read_metrics
from drivelab.sim.base import Observation
from drivelab.train import train
from drivelab.train.sequence_batches import SequenceBatches

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pilot" / "tiny_lstm_net.yaml"
LENGTHS = np.array([50, 23, 81, 40, 64, 35, 90])


def small(dataset: Path, *extra: str) -> list[str]:
    """Overrides that make tiny_LSTM_net train in seconds on the small dataset."""
    return quick(
        dataset,
        "model.recurrent.hidden=16",
        "train.bptt.window=8",
        "train.log_every=2",
        "train.val_every=null",
        "train.checkpoint_every=1000",
        *extra,
        size=32, batch_size=2,
    )


# ---------------------------------------------------------------------------- samplers
def test_window_sampler_draws_fitting_windows_deterministically() -> None:
    sampler = WindowSampler(LENGTHS, batch_size=6, window=30, seed=5)
    seen = set()
    for batch in range(40):
        rows = sampler.rows_of(batch)
        assert len(rows) == 6
        for episode, start, count, reset, last in rows:
            assert count == 30 and reset and not last
            assert start >= 0 and start + 30 <= LENGTHS[episode]
            seen.add(int(episode))
    assert seen == {e for e, n in enumerate(LENGTHS) if n >= 30}  # too-short episodes never drawn
    again = WindowSampler(LENGTHS, batch_size=6, window=30, seed=5, start_batch=17)
    assert next(iter(again)) == sampler.rows_of(17)  # a pure function of (seed, batch)
    assert WindowSampler(LENGTHS, 6, 30, seed=6).rows_of(17) != sampler.rows_of(17)
    ranks = [WindowSampler(LENGTHS, 3, 30, seed=5, rank=r, world_size=2).rows_of(4) for r in (0, 1)]
    assert ranks[0] + ranks[1] == sampler.rows_of(4)  # DDP ranks split one global batch


def test_full_sampler_cuts_or_pads_whole_episodes() -> None:
    cut = FullSampler(LENGTHS, batch_size=2, seed=1, policy="cut")
    pad = FullSampler(LENGTHS, batch_size=2, seed=1, policy="pad")
    assert cut.batches_per_epoch == 3
    visited = []
    for batch in range(3):
        rows, padded = cut.rows_of(batch), pad.rows_of(batch)
        episodes = [r[0] for r in rows]
        assert episodes == [r[0] for r in padded]
        assert all(r[1] == 0 and r[3] for r in rows)  # whole episodes from a zero state
        assert [r[2] for r in rows] == [min(LENGTHS[episodes])] * 2
        assert [r[2] for r in padded] == list(LENGTHS[episodes])
        visited += episodes
    assert len(set(visited)) == 6  # one epoch: each episode at most once
    dropped, total = cut.dropped_share()
    assert 0 < dropped < total
    with pytest.warns(BPTTWarning, match=rf"{dropped} of {total} training frames"):
        warn_if_cut_drops(cut)
    one = FullSampler(LENGTHS, batch_size=1, seed=1)
    assert one.dropped_share()[0] == 0 and sorted(one.rows_of(b)[0][0] for b in range(7)) == list(range(7))


def test_sliding_rows_walk_their_episodes_and_restart() -> None:
    lengths = np.array([45, 30, 20, 61])
    sampler = SlidingSampler(lengths, batch_size=2, window=20, stride=10, seed=3)
    stream = iter(sampler)
    batches = [next(stream) for _ in range(30)]
    for row in range(2):
        rows = [b[row] for b in batches]
        assert rows[0][1] == 0 and rows[0][3]  # the first episode starts from zeros
        for prev, cur in itertools.pairwise(rows):
            if prev[4]:  # the previous window reached the episode end: a new episode, zero state
                assert cur[1] == 0 and cur[3]
            else:
                assert cur[0] == prev[0] and cur[1] == prev[1] + 10 and not cur[3]
        for episode, start, count, _, last in rows:
            assert count == min(20, lengths[episode] - start)
            assert last == (start + 20 >= lengths[episode])
    # rows play disjoint episodes within an epoch
    assert batches[0][0][0] != batches[0][1][0]
    # the position is a cursor per row; continuing from a saved one reads the same batches
    state = sampler.state(13)
    resumed = SlidingSampler(lengths, 2, 20, 10, seed=3, start=state["rows"], start_batch=13)
    assert [next(iter(resumed))] == batches[13:14]
    again = iter(resumed)
    assert [next(again) for _ in range(17)] == batches[13:]
    assert sampler.state(13) == state  # walking the cursors is repeatable


def test_sampler_bad_input_is_one_clear_error() -> None:
    with pytest.raises(SequenceError, match=r"window=100 is longer than every training episode \(the longest has 90"):
        WindowSampler(LENGTHS, 4, window=100, seed=0)
    with pytest.raises(SequenceError, match="window=100 is longer than every"):
        SlidingSampler(LENGTHS, 2, window=100, stride=100, seed=0)
    with pytest.raises(SequenceError, match=r"8 sliding rows, but the training split has only 7 episodes.*<= 7"):
        SlidingSampler(LENGTHS, 8, window=10, stride=10, seed=0)
    with pytest.raises(SequenceError, match="more whole episodes per batch than the training split has"):
        FullSampler(LENGTHS, 8, seed=0)


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.bptt.mode=none"], r"train\.bptt\.mode: model\.recurrent needs sequences"),
        (["model.recurrent=null"], r"train\.bptt\.mode: 'window' trains a recurrent policy"),
        (["train.bptt.mode=sliding", "train.bptt.step=30"], r"train\.bptt\.step: 30 is longer than the window"),
        (["train.bptt.step=5"], r"train\.bptt\.step: applies only to mode: sliding"),
        (["train.bptt.mode=full", "train.bptt.initial_state=warmup"], r"initial_state: 'warmup' applies only"),
        (["train.bptt.accumulate=true"], r"train\.bptt\.accumulate: applies only to mode: sliding"),
        (["train.bptt.mode=chunks"], r"train\.bptt\.mode"),
        (["model.recurrent.hiden=3"], r"model\.recurrent"),
    ],
)
def test_config_checks_sequences_statically(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG, overrides)


# ---------------------------------------------------------------------------- model
def test_recurrent_policy_step_by_step_equals_the_sequence() -> None:
    cfg = load_config(CONFIG, ["data.input_size=[32,32]", "model.recurrent.hidden=16",
                               "model.heads.steering.kind=classification", "model.heads.steering.loss=null",
                               "model.heads.steering.bins=[-0.9, 0.0, 0.9]", "model.heads.steering.low=-0.9",
                               "model.heads.steering.high=0.9"])
    torch.manual_seed(0)
    policy = build_policy(cfg.model, cfg.frame_shape)
    assert isinstance(policy, RecurrentPolicy) and policy.layers == 2
    frames = torch.randn(3, 9, 3, 32, 32)
    whole = policy(frames)
    assert whole["steering"].shape == (3, 9, 3) and whole["accel_brake"].shape == (3, 9)
    state = None
    for t in range(9):
        step, state = policy.step(frames[:, t], None, state)
        assert torch.allclose(step["steering"], whole["steering"][:, t], atol=1e-5)
        assert torch.allclose(step["accel_brake"], whole["accel_brake"][:, t], atol=1e-5)
        if t == 3:
            at_four = state
    assert torch.allclose(state, whole[STATE_KEY], atol=1e-5)
    kept = policy(frames, keep_at=4)
    assert torch.allclose(kept[STATE_KEY], at_four, atol=1e-5)  # the state where the next window starts
    assert torch.allclose(kept["accel_brake"], whole["accel_brake"], atol=1e-5)
    # warmup: each row's state after its own number of steps; padding never counts
    lengths = torch.tensor([4, 0, 9])
    warm = policy(frames, lengths=lengths)[STATE_KEY]
    assert torch.allclose(warm[:, :, 0], at_four[:, :, 0], atol=1e-5)
    assert torch.equal(warm[:, :, 1], torch.zeros_like(warm[:, :, 1]))
    assert torch.allclose(warm[:, :, 2], whole[STATE_KEY][:, :, 2], atol=1e-5)
    # 4-D frames: one sequence from zero state, per-frame output shapes (summary, offline)
    single = policy(frames[2])
    assert single["accel_brake"].shape == (9,)
    assert torch.allclose(single["accel_brake"], whole["accel_brake"][2], atol=1e-5)


# ---------------------------------------------------------------------------- reading sequences
def test_sequence_batches_read_windows_padding_and_warmup(small_dataset: Path) -> None:
    store = DatasetStore.open(small_dataset)
    frames = EpisodeFrameDataset(store, "train", outputs=["steering", "accel_brake"],
                                 history_signals=["speed"], history_length=3)
    reader = SequenceBatches(frames, steps=10, warmup_every=3, warmup_frames=4)
    length = frames.episodes[1].length
    rows = [(1, 5, 10, True, False), (0, 0, 10, True, False), (1, length - 4, 4, False, True)]
    batch = reader.__getitems__(rows)
    assert batch["frames"].dtype == torch.uint8 and batch["frames"].shape == (3, 10, 3, 96, 96)
    assert batch["history"].shape == (3, 10, 3, 1)
    assert batch["target/steering"].shape == (3, 10, 1)
    assert batch["mask"].tolist()[2] == [1.0] * 4 + [0.0] * 6
    assert batch["reset"].tolist() == [True, True, False] and batch["last"].tolist() == [False, False, True]
    start1 = frames.episodes[0].length  # sample index of episode 1's first frame
    for t in range(10):
        sample = frames[start1 + 5 + t]
        assert torch.equal(batch["frames"][0, t], sample["frames"])
        assert torch.equal(batch["history"][0, t], sample["history"])
        assert torch.equal(batch["target/accel_brake"][0, t], sample["target/accel_brake"])
    assert torch.equal(batch["frames"][2, 4:], torch.zeros_like(batch["frames"][2, 4:]))
    # warmup: every 3rd earlier frame, at most 4, nearest last: row 0 (start 5) -> steps 2;
    # row 1 (start 0) -> none; row 2 (start L-4) -> L-16, L-13, L-10, L-7
    assert batch["warmup/lengths"].tolist() == [1, 0, 4]
    assert torch.equal(batch["warmup/frames"][0, 0], frames[start1 + 2]["frames"])
    for i, step in enumerate([length - 16, length - 13, length - 10, length - 7]):
        assert torch.equal(batch["warmup/frames"][2, i], frames[start1 + step]["frames"])


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    "mode",
    [
        ["train.bptt.mode=full", "train.batch_size=1", "train.bptt.full_policy=pad",
         "model.history={signals: [speed, steering], length: 3, kind: lstm, layers: 1, width: 8, aux_weight: 0.25}"],
        ["train.bptt.mode=window", "train.bptt.initial_state=warmup", "train.bptt.warmup_every=4",
         "train.bptt.warmup_frames=6"],
        ["train.bptt.mode=sliding", "train.bptt.window=20", "train.bptt.accumulate=true"],
        ["train.bptt.mode=sliding", "train.bptt.window=12", "train.bptt.step=5"],
    ],
    ids=["full-pad-history", "window-warmup", "sliding-accumulate", "sliding-overlap"],
)
def test_resume_is_bit_identical_in_every_mode(small_dataset: Path, tmp_path: Path, mode: list[str]) -> None:
    """N batches + resume + N batches == 2N straight: weights, sampler position, carried state."""
    n = 3
    cfg = load_config(CONFIG, small(small_dataset, *mode, f"train.max_batches={2 * n}",
                                    f"train.checkpoint_every={n}", "train.val_every=2"))
    straight = train(cfg, runs_root=tmp_path)
    run = straight.run
    assert list_checkpoints(run.checkpoints) == [n, 2 * n]
    final = load_weights(weights_path(run.checkpoints, 2 * n))
    middle = load_trainer_state(run.checkpoints, n)
    assert middle["sequence"]["mode"] == cfg.train.bptt.mode
    if cfg.train.bptt.mode == "sliding":
        assert middle["carry"][0].shape == (2, 2, 2, 16)  # (h, c) x layers x rows x hidden
        assert len(middle["sequence"]["rows"]) == 2
    if cfg.train.bptt.accumulate:
        assert middle["accumulated"][0] is not None  # batch 3 of a 4-window episode: mid-sum
    # forget the second half, resume from batch N, and compare
    weights_path(run.checkpoints, 2 * n).unlink()
    state_path(run.checkpoints, 2 * n).unlink()
    resumed = train(cfg, runs_root=tmp_path, resume=run.path)
    assert resumed.first_batch == n and resumed.batches == 2 * n
    again = load_weights(weights_path(run.checkpoints, 2 * n))
    assert final.keys() == again.keys()
    assert all(torch.equal(final[k], again[k]) for k in final)
    rows = read_metrics(run.metrics_path)
    val = [r for r in rows if "val/loss" in r]
    assert val and all(np.isfinite(r["val/loss"]) for r in val)


def test_training_lowers_the_loss_and_validates_with_carried_state(small_dataset: Path, tmp_path: Path) -> None:
    cfg = load_config(CONFIG, small(small_dataset, "train.bptt.mode=window", "train.max_batches=30",
                                    "train.val_every=15", "train.lr=0.05",
                                    "train.optimizer={name: sgd, momentum: 0.9}"))
    result = train(cfg, runs_root=tmp_path)
    rows = read_metrics(result.run.metrics_path)
    val = [r["val/loss"] for r in rows if "val/loss" in r]
    assert [r["batch"] for r in rows if "val/loss" in r] == [0, 15, 30]
    assert val[-1] < 0.7 * val[0], val
    # offline scoring runs each val episode whole from a zero state: the loop's validation
    from drivelab.evaluate.offline import offline_metrics

    report = offline_metrics(str(result.run.path), "val")
    assert report.loss == pytest.approx(val[-1], rel=1e-4)


def test_runtime_carries_state_like_the_sequence_forward(small_dataset: Path, tmp_path: Path) -> None:
    """Driving step by step (window 1, carried state) computes the sequence forward's outputs."""
    cfg = load_config(CONFIG, small(small_dataset, "train.bptt.mode=sliding", "train.max_batches=2",
                                    "data.frames=2",
                                    "model.history={signals: [speed], length: 3, kind: dense, layers: 1, width: 8}"))
    run = train(cfg, runs_root=tmp_path).run
    runtime = PolicyRuntime.from_ref(str(run.path))
    store = DatasetStore.open(small_dataset)
    group = store.episode(store.split_episodes("val")[0].index)
    raw = np.asarray(group["frames"][:40])
    speed = np.asarray(group["telemetry/speed"][:40], np.float32)
    reader = SequenceBatches(EpisodeFrameDataset(store, "val", outputs=runtime.policy.outputs, frames=2,
                                                 history_signals=["speed"], history_length=3))
    batch = reader.__getitems__([(0, 0, 40, True, True)])
    frames = batch["frames"]
    with torch.no_grad():
        flat = runtime.pipeline.frames(frames.reshape(40, *frames.shape[2:]))
        whole = runtime.policy(flat.reshape(1, 40, *flat.shape[1:]), runtime.pipeline.history(batch["history"]))
    for round_ in range(2):  # a reset starts the next episode from zeros again
        runtime.reset(seed=0)
        for t in range(40):
            acted = runtime.act(Observation(frame=raw[t], telemetry={"speed": speed[t]}))
            assert acted["steering"] == pytest.approx(float(whole["steering"][0, t]), abs=1e-5), (round_, t)
            assert acted["accel_brake"] == pytest.approx(float(whole["accel_brake"][0, t]), abs=1e-5)


# ---------------------------------------------------------------------------- bad input
def test_bad_sequence_input_is_one_error_and_leaves_no_run(small_dataset: Path, tmp_path: Path) -> None:
    cases = [
        (["train.bptt.mode=window", "train.bptt.window=500"], r"window=500 is longer than every training episode"),
        (["train.bptt.mode=sliding", "train.batch_size=3"], r"3 sliding rows, but the training split has only 2"),
        (["train.bptt.mode=full", "train.batch_size=3"], r"more whole episodes per batch"),
    ]
    for overrides, message in cases:
        with pytest.raises(SequenceError, match=message):
            train(load_config(CONFIG, small(small_dataset, *overrides)), runs_root=tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_recurrent_config_on_single_frame_episodes_is_refused(tmp_path: Path) -> None:
    from drivelab.data.collect import CollectPlan, collect

    frames = tmp_path / "single.zarr"
    collect(frames, CollectPlan(env="carracing", seed=3, max_steps=1), episodes=3, workers=1, val_episodes=1)
    cfg = load_config(CONFIG, small(frames, "train.bptt.mode=window", "train.bptt.window=1",
                                    "train.batch_size=1"))
    with pytest.raises(SequenceError, match=r"no episode boundaries to learn from: every 'train' episode holds a single frame"):
        train(cfg, runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    result = run_cli_here("train", str(CONFIG), *small(frames, "train.bptt.window=1", "train.batch_size=1"),
                     "--runs", str(tmp_path / "runs"), "--no-progress")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and "single frame" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_summary_counts_the_lstm() -> None:
    from drivelab.models import summarize_config

    cfg = load_config(CONFIG, ["data.input_size=[32,32]"])
    summary = summarize_config(cfg)
    lstm = 4 * 64 * (1024 + 64 + 2) + 4 * 64 * (64 + 64 + 2)  # two layers, torch's two bias vectors
    assert summary.parts["lstm"].total == lstm
    assert summary.output_shapes == {"steering": (), "accel_brake": ()}  # the LSTM state is no output
    assert summary.counts.total == sum(part.total for part in summary.parts.values())


def test_image_classification_dataset_has_no_sequences(tmp_path: Path) -> None:
    from drivelab.data.facts import read_facts
    from drivelab.data.gtsrb import import_gtsrb
    from drivelab.data.importers import ImportOptions
    from drivelab.data.synth_signs import synthesize_signs
    from drivelab.order.sequences import check_sequence_data

    synthesize_signs(tmp_path / "signs", classes=2, per_class=4, seed=3, size=32, test_per_class=0)
    import_gtsrb(tmp_path / "signs", tmp_path / "signs.zarr", ImportOptions(size=16, val_fraction=0.0))
    store = DatasetStore.open(tmp_path / "signs.zarr")
    facts = read_facts(store, load_config(CONFIG))
    with pytest.raises(SequenceError, match=r"image-classification dataset .* drop model\.recurrent"):
        check_sequence_data(facts, "train")
