"""Balanced training on real CarRacing data: buffers, helper models, augmentation, standardised heads.

Everything trains `configs/carracing/pilotnet.yaml` made tiny (64x64 input, a few batches) on the
session's small real dataset, like tests/test_train.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PILOTNET, quick, run_cli_here
from drivelab.config import AugmentConfig, BalanceConfig, load_config
from drivelab.data.augment import BatchAugmenter, resolve_flip_targets
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.models import build_policy
from drivelab.models.heads import StandardizedRegressionHead
from drivelab.models.objectives import Objective
from drivelab.order.balance import BinnedLabels
from drivelab.order.binning import Binning
from drivelab.order.buffers import BufferBatchSampler
from drivelab.order.build import build_order
from drivelab.order.epochs import SchemeBatchSampler
from drivelab.processor.pipeline import InputPipeline
from drivelab.runs.checkpoints import list_checkpoints, load_weights
from drivelab.train import train
from drivelab.train.helper_models import helper_backward
from drivelab.train.inputs import open_inputs

CONFIG = PILOTNET


def tiny(dataset: Path, *extra: str) -> list[str]:
    return quick(
        dataset,
        "train.log_every=2",
        "train.val_every=1000",
        *extra,
        batch_size=8,
    )


def synthetic_labels(n: int = 400, seed: int = 0) -> BinnedLabels:
    """Skewed labels like expert driving: mostly straight and full throttle."""
    rng = np.random.default_rng(seed)
    steering = np.where(rng.random(n) < 0.8, rng.normal(0, 0.02, n), rng.uniform(-0.4, 0.4, n))
    pedal = np.where(rng.random(n) < 0.7, 1.0, rng.uniform(-1, 1, n))
    bins = {"steering": Binning(edges=(-1.0, -0.2, 0.0, 0.2, 1.0), name="steering"),
            "accel_brake": Binning(edges=(-1.0, 0.0, 0.5, 1.0), exact=(1.0,), name="accel_brake")}
    return BinnedLabels.from_values({"steering": steering, "accel_brake": pedal}, bins)


# ---------------------------------------------------------------------------- buffers
def test_buffers_draw_evenly_without_replacement_and_resume_from_a_snapshot() -> None:
    binned = synthetic_labels()
    balance = BalanceConfig(scheme="v3", buffer_size=120)
    sampler = BufferBatchSampler(binned, balance, batch_size=16, seed=5, helper=False)
    assert sampler.fill_levels() == {"steering": 1.0, "accel_brake": 1.0}
    stream = iter(sampler)
    batches = []
    for number in range(30):
        batches.append(next(stream))
        before = sampler._snapshots[number]["buffers"]
        batch = batches[-1]
        assert len(batch) == 16
        # the same number from each output's buffer, drawn without replacement: a sample comes
        # out at most as often as the buffer held it (rare bins' samples repeat in the stream)
        for part, output in ((batch[:8], "steering"), (batch[8:], "accel_brake")):
            held = np.bincount(before[output], minlength=binned.n)
            assert (np.bincount(part, minlength=binned.n) <= held).all()
    # each part is balanced for its own output: its bins come out (nearly) even
    steering_part = np.concatenate([b[:8] for b in batches])
    counts = binned.counts("steering", steering_part)
    assert counts.min() >= 0.6 * counts.max()
    raw = binned.counts("steering")
    assert raw.max() > 5 * raw.min()  # the data itself is skewed
    assert sampler.fill_levels() == {"steering": 1.0, "accel_brake": 1.0}  # refilled

    # the state before batch 12 (taken while the loader ran ahead) resumes the same draws
    state = sampler.state(12)
    again = BufferBatchSampler(binned, balance, batch_size=16, seed=5, helper=False, start=12,
                               state=state)
    resumed = iter(again)
    assert [next(resumed) for _ in range(18)] == batches[12:]


def test_buffer_larger_than_the_data_and_empty_bins_are_clear_errors() -> None:
    binned = synthetic_labels(n=100)
    with pytest.raises(Exception, match="buffer_size 500 needs 450 samples"):
        BufferBatchSampler(binned, BalanceConfig(scheme="v3", buffer_size=500), 8, 0, helper=False)
    wide = BinnedLabels.from_values(
        {"steering": np.zeros(50)}, {"steering": Binning(edges=(-1.0, -0.5, 0.5, 1.0), name="steering")}
    )
    with pytest.raises(Exception, match=r"2 bins have no samples.*skip_empty"):
        BufferBatchSampler(wide, BalanceConfig(scheme="v3", buffer_size=40), 8, 0, helper=False)


def test_epoch_schemes_resume_at_any_batch() -> None:
    rng_orders = {e: np.random.default_rng(e).permutation(100 - 7 * (e % 3)) for e in range(10)}
    full = SchemeBatchSampler(lambda e: rng_orders[e], batch_size=10)
    it = iter(full)
    first = [next(it) for _ in range(40)]
    later = iter(SchemeBatchSampler(lambda e: rng_orders[e], batch_size=10, start=23))
    assert [next(later) for _ in range(17)] == first[23:]
    # epochs of different lengths: positions walk the per-epoch batch counts
    # 100, 93, 86 samples -> 10, 9, 8 batches
    assert full.position(10) == (1, 0) and full.position(18) == (1, 8) and full.position(20) == (2, 1)


# ---------------------------------------------------------------------------- helper models
def test_helper_update_equals_the_sum_of_per_output_gradients(small_dataset: Path) -> None:
    cfg = load_config(CONFIG, tiny(small_dataset))
    inputs = open_inputs(cfg)
    torch.manual_seed(0)
    policy = build_policy(cfg.model, cfg.frame_shape, inputs.history_sizes)
    pipeline = InputPipeline(inputs.processor)
    objective = Objective(cfg.model.heads)
    outputs = ["steering", "accel_brake"]
    batches = [inputs.train.__getitems__(list(range(k * 8, k * 8 + 8))) for k in range(2)]

    separate = []
    for output, batch in zip(outputs, batches, strict=True):
        policy.zero_grad(set_to_none=True)
        objective.output_terms(output, policy(*pipeline(batch)), batch).total.backward()
        separate.append({n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                         for n, p in policy.named_parameters()})
    expected = {n: separate[0][n] + separate[1][n] for n in separate[0]}

    policy.zero_grad(set_to_none=True)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    values = helper_backward(policy, pipeline, objective, batches, outputs, lambda t: t.backward())
    for name, p in policy.named_parameters():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        assert torch.allclose(grad, expected[name], rtol=1e-6, atol=1e-9), name
    optimizer.step()
    for name, p in policy.named_parameters():
        assert torch.allclose(p.detach(), before[name] - 0.1 * expected[name], rtol=1e-6, atol=1e-8)
    # each head got gradient only from its own output's batch
    assert torch.equal(expected["heads.steering.0.weight"], separate[0]["heads.steering.0.weight"])
    assert not separate[0]["heads.accel_brake.0.weight"].any()
    assert set(values) >= {"loss", "steering_loss", "accel_brake_loss"}


def test_v2_trains_with_helpers_and_v3_resumes_bit_identically(small_dataset: Path, tmp_path: Path) -> None:
    v2 = train(load_config(CONFIG, tiny(small_dataset, "data.balance.scheme=v2",
                                        "data.balance.skip_empty=true", "data.balance.buffer_size=64",
                                        "train.max_batches=4")), runs_root=tmp_path / "v2")
    assert v2.batches == 4 and np.isfinite(v2.train_values["loss"])
    # two outputs -> two batches of 8 per step
    assert v2.train_values["samples_per_s"] > 0

    common = tiny(small_dataset, "data.balance.scheme=v3", "data.balance.skip_empty=true",
                  "data.balance.buffer_size=64", "train.max_batches=8", "train.checkpoint_every=4",
                  "data.workers=2")
    cfg = load_config(CONFIG, common)
    straight = train(cfg, runs_root=tmp_path / "straight")
    half = load_config(CONFIG, [*common, "train.checkpoint_every=4"])
    first = train(half.model_copy(update={"train": half.train.model_copy(update={"max_batches": 4})}),
                  runs_root=tmp_path / "split")
    assert first.batches == 4
    # the same config (8 batches) resumes the 4-batch run where it stopped
    run = first.run
    (run.path / "config.yaml").write_text(
        (straight.run.path / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    resumed = train(cfg, runs_root=tmp_path / "split", resume=run.path)
    assert resumed.first_batch == 4 and list_checkpoints(run.checkpoints) == [4, 8]
    a = load_weights(straight.run.checkpoints / "batch_8.safetensors")
    b = load_weights(run.checkpoints / "batch_8.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- augmentation
def test_flip_mirrors_frames_and_negates_steering_and_bearing(small_dataset: Path) -> None:
    cfg = load_config(CONFIG, tiny(small_dataset, "model.history.signals=[speed, purpose]"))
    inputs = open_inputs(cfg)
    meta = inputs.store.meta
    flip = resolve_flip_targets(["steering", "purpose[1]"], cfg.model.outputs,
                                {a.name: a.size for a in meta.actions}, list(inputs.history_sizes),
                                {t.name: t.size for t in meta.telemetry})
    assert flip.outputs == ("steering",) and flip.history_columns == (2,)  # speed, dist, bearing
    augmenter = BatchAugmenter(AugmentConfig(flip=1.0), seed=3, flip_targets=flip, action_ranges={})
    indices = list(range(10, 26))
    plain = inputs.train.__getitems__(indices)
    flipped = augmenter(inputs.train.__getitems__(indices), number=0)
    assert flipped["frames"].dtype == torch.uint8
    assert torch.equal(flipped["frames"], plain["frames"].flip(-1))
    assert torch.equal(flipped["target/steering"], -plain["target/steering"])
    assert torch.equal(flipped["target/accel_brake"], plain["target/accel_brake"])
    assert torch.equal(flipped["history"][..., 2], -plain["history"][..., 2])
    assert torch.equal(flipped["history"][..., :2], plain["history"][..., :2])


def test_augmentation_is_seeded_by_batch_number_and_shifts_correct_steering(small_dataset: Path) -> None:
    cfg = load_config(CONFIG, tiny(small_dataset))
    inputs = open_inputs(cfg)
    config = AugmentConfig(flip=0.5, brightness=0.3, contrast=0.3, colour=0.1, translate=3,
                           noise=2.0, blur=0.3)
    flip = resolve_flip_targets(config.flip_negate, cfg.model.outputs, {"steering": 1, "accel_brake": 1},
                                [], {"steering": 1, "purpose": 2})
    augmenter = BatchAugmenter(config, seed=11, flip_targets=flip, action_ranges={})
    idx = list(range(16))
    a = augmenter(inputs.train.__getitems__(idx), number=7)
    b = augmenter(inputs.train.__getitems__(idx), number=7)
    c = augmenter(inputs.train.__getitems__(idx), number=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["frames"], c["frames"])

    shift = BatchAugmenter(AugmentConfig(translate=4, translate_steering=0.05), seed=1,
                           flip_targets=flip, action_ranges={"steering": (-1.0, 1.0)})
    plain = inputs.train.__getitems__(idx)
    shifted = shift(inputs.train.__getitems__(idx), number=2)
    moved = shifted["target/steering"] - plain["target/steering"]
    for i in range(len(idx)):
        dx = round(float(moved[i, 0]) / 0.05)
        assert abs(dx) <= 4
        if dx > 0:
            assert torch.equal(shifted["frames"][i, :, :, dx:], plain["frames"][i, :, :, :-dx])
        elif dx < 0:
            assert torch.equal(shifted["frames"][i, :, :, :dx], plain["frames"][i, :, :, -dx:])


def test_training_with_augmentation_and_standardised_heads(small_dataset: Path, tmp_path: Path) -> None:
    extra = tiny(
        small_dataset, "train.max_batches=3", "data.workers=2",
        "data.augment={flip: 0.5, brightness: 0.2, translate: 2, translate_steering: 0.02}",
        "model.heads=[{output: steering, widths: [8], standardize: true}, "
        "{output: accel_brake, widths: [8], standardize: true}]",
    )
    result = train(load_config(CONFIG, extra), runs_root=tmp_path)
    weights = load_weights(result.run.checkpoints / "batch_3.safetensors")
    store = DatasetStore.open(small_dataset)
    moments = store.moments(store.split_episodes("train"))
    assert float(weights["heads.steering.target_mean"]) == pytest.approx(
        moments["actions/steering"].mean[0], rel=1e-5)
    assert float(weights["heads.accel_brake.target_std"]) == pytest.approx(
        moments["actions/accel_brake"].std[0], rel=1e-5)
    head = StandardizedRegressionHead(4, [])
    head.set_target_statistics(0.5, 2.0)
    features = torch.randn(3, 4)
    raw = torch.nn.Sequential.forward(head, features).squeeze(1)
    assert torch.allclose(head(features), raw * 2.0 + 0.5)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.balance.outputs=[speed]", "data.balance.outputs: 'speed' is not an action"),
        ("data.balance.bins={steering: [[-1, 0], [0.1, 1]], accel_brake: [[-1, 1]]}",
         "data.balance.bins.steering: .*no bin"),
        ("data.balance.bins={steering: [[-0.5, 0.5]], accel_brake: [[-1, 1]]}",
         "data.balance.bins.steering: .*uncovered"),
        ("data.augment={flip: 0.5, flip_negate: [steer]}", "flip_negate: 'steer' is neither"),
    ],
)
def test_bad_balance_and_augment_settings_are_refused_before_a_run_exists(
    small_dataset: Path, tmp_path: Path, override: str, message: str
) -> None:
    scheme = [] if "augment" in override else ["data.balance.scheme=v3"]
    with pytest.raises(DrivelabError, match=message):
        train(load_config(CONFIG, tiny(small_dataset, *scheme, override)), runs_root=tmp_path)
    assert not list(tmp_path.glob("*/*"))


def test_cli_names_overlapping_bins_in_one_line(small_dataset: Path, tmp_path: Path) -> None:
    r = run_cli_here("train", str(CONFIG), *tiny(small_dataset, "data.balance.scheme=v3",
                "data.balance.bins={steering: [[-1, 0.2], [0.1, 1]], accel_brake: [[-1, 1]]}"),
                "--runs", str(tmp_path))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: data.balance.bins.steering:"), r.stderr
    assert "overlap" in lines[0]
    assert not list(tmp_path.glob("*/*"))


def test_every_scheme_builds_a_sampler_on_real_data(small_dataset: Path) -> None:
    for scheme in ("v1", "v2", "v3", "v4", "inverse_frequency", "normalized_output"):
        cfg = load_config(CONFIG, tiny(small_dataset, f"data.balance.scheme={scheme}",
                                       "data.balance.skip_empty=true", "data.balance.buffer_size=64",
                                       "data.balance.bins=v1", "data.balance.cap=0.5"))
        inputs = open_inputs(cfg)
        sampler = build_order(inputs.config, inputs.facts, 0, 1)
        batch = next(iter(sampler))
        assert len(batch) == (16 if scheme == "v2" else 8), scheme
        assert all(0 <= i < len(inputs.train) for i in batch)
