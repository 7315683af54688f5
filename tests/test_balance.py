"""Binning and balancing schemes: exact properties on synthetic labels, plus the `data balance` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli_here
from drivelab.errors import DrivelabError
from drivelab.order.balance import (
    BinnedLabels,
    balance_v1,
    balance_v2,
    balance_v3,
    balance_v4,
    entropy_bits,
    inverse_frequency,
    kish_ess,
    normalized_output,
)
from drivelab.order.binning import Binning, preset_binning


def _expert_like(n: int = 3000, seed: int = 0) -> BinnedLabels:
    """Steering mostly near/at 0 within the ±0.4 lock, accel_brake mostly exactly 1."""
    rng = np.random.default_rng(seed)
    steering = np.clip(rng.normal(0.0, 0.12, n), -0.4, 0.4)
    steering[rng.random(n) < 0.3] = 0.0
    accel = np.where(rng.random(n) < 0.6, 1.0, rng.uniform(-1.0, 1.0, n))
    # skew: hard steering comes with braking, as in corners
    accel[np.abs(steering) > 0.25] = rng.uniform(-1.0, -0.5, int((np.abs(steering) > 0.25).sum()))
    bins = {k: preset_binning("v1", k, -1.0, 1.0) for k in ("steering", "accel_brake")}
    return BinnedLabels.from_values({"steering": steering, "accel_brake": accel}, bins)


# --------------------------------------------------------------------------- binning
def test_presets_match_charles_bin_counts() -> None:
    assert preset_binning("v2", "steering", -1.0, 1.0).n_bins == 21
    assert preset_binning("v2", "throttle", 0.0, 1.0).n_bins == 12
    assert preset_binning("v1", "steering", -1.0, 1.0).n_bins == 9
    assert preset_binning("v1", "brake", 0.0, 1.0).labels == ["0", "(0,0.2)", "[0.2,0.8)", "[0.8,1)", "1"]


def test_assign_puts_exact_values_in_their_own_bins() -> None:
    b = Binning.from_spec([0.0, (0.0, 0.2), (0.2, 0.8), (0.8, 1.0), 1.0], name="gas")
    got = b.assign(np.array([0.0, 1e-9, 0.1, 0.2, 0.5, 0.99, 1.0], np.float32))
    assert got.tolist() == [0, 0, 1, 2, 2, 3, 4]
    with pytest.raises(DrivelabError, match="outside"):
        b.assign(np.array([1.5]))


@pytest.mark.parametrize(
    ("spec", "low", "high", "match"),
    [
        ([(0.0, 0.2), (0.3, 1.0)], 0.0, 1.0, r"between 0.2 and 0.3 have no bin"),
        ([(0.0, 0.5), (0.4, 1.0)], 0.0, 1.0, r"\(0,0.5\) and \(0.4,1\) overlap"),
        ([(0.0, 1.0)], -1.0, 1.0, r"leave \[-1,0\) of its range"),
        ([0.0, 0.0, (0.0, 1.0)], 0.0, 1.0, r"exact bins 0 and 0 overlap"),
    ],
)
def test_bad_bins_are_named(spec: list, low: float, high: float, match: str) -> None:
    with pytest.raises(DrivelabError, match=match):
        Binning.from_spec(spec, name="gas").check_covers(low, high)


# --------------------------------------------------------------------------- schemes
def test_v1_equal_count_per_non_empty_combination() -> None:
    binned = _expert_like()
    r = balance_v1(binned, seed=1, rounds=3)
    key = binned.index["steering"][r.indices] * 100 + binned.index["accel_brake"][r.indices]
    _, counts = np.unique(key, return_counts=True)
    assert len(counts) == r.combinations and set(counts.tolist()) == {3}
    assert r.rounds_available >= 1 and r.combinations < r.combinations_possible
    assert np.array_equal(balance_v1(binned, seed=1, rounds=3).indices, r.indices)  # seeded


def test_v2_sets_are_even_per_output_and_empty_bins_fail() -> None:
    binned = _expert_like()
    with pytest.raises(DrivelabError, match=r"bins have no samples \(-1, \(-1,-0.6\)"):
        balance_v2(binned)
    sets = balance_v2(binned, seed=0, samples_per_output=700, skip_empty=True)
    for output, idx in sets.items():
        counts = binned.counts(output, indices=idx)
        non_empty = counts[binned.counts(output) > 0]
        assert len(idx) == 700 and non_empty.max() - non_empty.min() <= 1


def test_v3_equalises_each_outputs_part() -> None:
    binned = _expert_like()
    idx = balance_v3(binned, seed=2, samples_per_output=600, skip_empty=True)
    assert len(idx) == 1200
    for k, output in enumerate(binned.outputs):
        part = binned.counts(output, indices=idx[k * 600 : (k + 1) * 600])
        non_empty = part[binned.counts(output) > 0]
        assert non_empty.max() - non_empty.min() <= 1


def test_v4_balances_other_outputs_at_least_as_well_as_v3() -> None:
    binned = _expert_like()
    v3 = balance_v3(binned, seed=3, samples_per_output=600, skip_empty=True)
    v4 = balance_v4(binned, seed=3, samples_per_output=600, skip_empty=True)
    for output in binned.outputs:
        assert entropy_bits(binned.counts(output, indices=v4)) >= entropy_bits(
            binned.counts(output, indices=v3)
        )
    # the output being balanced in each part is exactly as even as in v3
    part = binned.counts("steering", indices=v4[:600])
    assert np.ptp(part[binned.counts("steering") > 0]) <= 1


def test_inverse_frequency_raises_entropy_and_costs_ess() -> None:
    binned = _expert_like()
    w = inverse_frequency(binned, power=1.0)
    half = inverse_frequency(binned, power=0.5)
    for output in binned.outputs:
        before = entropy_bits(binned.counts(output))
        assert entropy_bits(binned.counts(output, weights=half)) > before
        assert entropy_bits(binned.counts(output, weights=w)) > before
    assert kish_ess(w) < kish_ess(half) < binned.n
    np.testing.assert_allclose(inverse_frequency(binned, power=0.0), 1.0)


def test_normalized_output_caps_each_bin_per_batch() -> None:
    binned = _expert_like()
    kept = normalized_output(binned, seed=0, batch_size=30, cap=1 / 3)
    full = len(kept) // 30 * 30
    for batch in kept[:full].reshape(-1, 30):
        for output in binned.outputs:
            assert binned.counts(output, indices=batch).max() <= 10
    assert 0 < len(kept) < binned.n


# --------------------------------------------------------------------------- CLI
def test_cli_balance_writes_json_and_png(small_dataset: Path, tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    res = run_cli_here("data", "balance", str(small_dataset), "--scheme", "v3", "--skip-empty",
                  "--json", str(out_json), "--plot", str(out_png), "--seed", "1")
    assert res.returncode == 0, res.stderr
    report = json.loads(out_json.read_text())
    assert {"scheme", "frames_before", "frames_kept", "effective_sample_size"} <= set(report)
    for o in report["outputs"].values():
        assert {"bins", "counts_before", "counts_after", "entropy_before", "entropy_after"} <= set(o)
        assert o["entropy_after"] >= o["entropy_before"]
    assert out_png.stat().st_size > 0


def test_cli_balance_unknown_output_is_one_error_line(small_dataset: Path) -> None:
    res = run_cli_here("data", "balance", str(small_dataset), "--output", "throttle")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "throttle" in lines[0]
