"""`drivelab diagnose`: small real runs on the small real dataset, diagnosed offline and in closed loop.

The two policies are built so that their verdicts are certain by construction, on every CPU
kind and precision (what a tiny model learns in a few batches is not: a 120-batch PilotNet's
steering read the road in bf16 on one CPU and leaned on speed in fp32 on another). Both are
real runs (trained two batches for their folder, statistics and checkpoint) whose heads are
then set by least squares, and the figures the verdicts rest on are asserted with a margin:

- blind: no backbone (``backbone: none``); its history layer passes the last two steps of the
  past actions through, its speed columns are zero, and its heads repeat the mean of its own
  last two actions. It cannot see the frames, so it must be flagged a copycat;
- sighted: PilotNet frames plus a speed history whose layer is all zeros (speed cannot move
  an output); its heads interpolate the split's targets from the frame features (1600
  features for 80 samples), so scrambling the frames must raise the loss: not flagged.

The figures must be finite and shaped as the run's inputs; bad input fails in one line before
any work.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PILOTNET, quick, run_cli_here
from drivelab.config import load_config
from drivelab.diagnose.forward import run_policy
from drivelab.diagnose.job import DiagnoseRequest, diagnose
from drivelab.diagnose.report import reliance_png, save_report
from drivelab.diagnose.samples import SplitSamples, load_split
from drivelab.evaluate.offline import OfflineJob
from drivelab.evaluate.overrides import InputOverride
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.runs.folder import resolve_checkpoint
from drivelab.sim import make_env
from drivelab.train import train

#: one linear layer per head straight on the joined features, so least squares sets it exactly
LINEAR_HEADS = ["model.neck=[]", "model.heads=[{output: steering, widths: [], loss: mse}, "
                "{output: accel_brake, widths: [], loss: mse}]"]
BLIND = ["model.backbone.name=none",
         "model.history={signals: [steering, accel_brake, speed], length: 4, kind: dense, layers: 1, width: 16}"]
SIGNALS = ("steering", "accel_brake", "speed")  # the blind history's columns, in order
BATCHES = 2  # the runs train only for their folder: the heads are set afterwards


def _train(dataset: Path, root: Path, line: str, size: int, *extra: str) -> str:
    config = load_config(PILOTNET, quick(dataset, f"train.max_batches={BATCHES}", f"train.checkpoint_every={BATCHES}",
                                         f"train.val_every={BATCHES}", "train.warmup_batches=1", f"line={line}",
                                         *LINEAR_HEADS, *extra, size=size))
    return str(train(config, runs_root=root).run.path)


def _set_heads(run: str, root: Path, split: str, history_layer: Callable[[torch.nn.Linear], None],
               target: Callable[[SplitSamples, str], torch.Tensor]) -> None:
    """Rewrite the run's checkpoint: ``history_layer`` set by hand, then each head's linear layer
    fitted by least squares (float64) to ``target`` on the features the diagnosis will see."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    job = OfflineJob(run, split, None, root)
    policy, outputs = job.runtime.policy, [h.output for h in job.objective.heads]
    with torch.no_grad():
        history_layer(policy.history.encoder.layers[1])
    samples = load_split(job.samples, outputs)
    joint = run_policy(job.runtime, samples.batch, torch.device("cpu"), features=True).joint
    x = torch.cat([joint.double(), torch.ones(len(samples), 1, dtype=torch.float64)], 1)
    for output in outputs:
        solution = torch.linalg.lstsq(x, target(samples, output).double()[:, None], driver="gelsd").solution[:, 0]
        with torch.no_grad():
            policy.heads[output][-1].weight.copy_(solution[:-1][None])
            policy.heads[output][-1].bias.copy_(solution[-1:])
    _, _, path = resolve_checkpoint(run, root)
    with safe_open(str(path), "pt") as weights:
        metadata = weights.metadata()
    save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(path), metadata=metadata)


def _blind_history(layer: torch.nn.Linear) -> None:
    """Units relu(+x), relu(-x) of the last two steps' steering and accel_brake; speed unread."""
    layer.weight.zero_()
    layer.bias.zero_()
    steps, unit = layer.in_features // len(SIGNALS), 0
    for step in (steps - 2, steps - 1):
        for column in (SIGNALS.index("steering"), SIGNALS.index("accel_brake")):
            for sign in (1.0, -1.0):
                layer.weight[unit, step * len(SIGNALS) + column] = sign
                unit += 1


def _repeat_last_actions(samples: SplitSamples, output: str) -> torch.Tensor:
    """The mean of the last two executed actions of ``output`` (raw units): a copycat."""
    column = samples.batch["history"][..., SIGNALS.index(output)]
    return 0.5 * (column[:, -1] + column[:, -2])


def _expert(samples: SplitSamples, output: str) -> torch.Tensor:
    return samples.batch[f"target/{output}"].reshape(len(samples), -1)[:, 0]


def _zero(layer: torch.nn.Linear) -> None:
    layer.weight.zero_()
    layer.bias.zero_()


@pytest.fixture(scope="module")
def runs(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("runs")
    sighted = _train(small_dataset, root, "sighted", 96)  # 96x96 frames: 5x5x64 = 1600 features
    blind = _train(small_dataset, root, "blind", 64, *BLIND)
    _set_heads(sighted, root, "val", _zero, _expert)  # interpolates the diagnosed split
    _set_heads(blind, root, "train", _blind_history, _repeat_last_actions)
    return {"sighted": sighted, "blind": blind, "root": str(root)}


def _flags(report_dict: dict, head: str) -> list[str]:
    return [f["text"] for f in report_dict["verdicts"][head] if f["flagged"]]


def _reliance(report_dict: dict, head: str, name: str) -> dict:
    return next(g for g in report_dict["reliance"][head] if g["group"] == name)


def test_a_policy_blind_to_the_frames_is_flagged_and_one_that_reads_them_is_not(runs: dict[str, str]) -> None:
    blind = diagnose(DiagnoseRequest(runs["blind"], Path(runs["root"]), tracks=0)).to_dict()
    sighted = diagnose(DiagnoseRequest(runs["sighted"], Path(runs["root"]), tracks=0)).to_dict()
    for head in ("steering", "accel_brake"):
        assert any("copycat risk" in text for text in _flags(blind, head)), blind["verdicts"][head]
        frames = _reliance(blind, head, "frames")
        assert frames["permuted"]["loss"] == 0.0 and frames["share"] == 0.0  # it cannot see them
        own = _reliance(blind, head, head)  # its own past action carries the whole effect, with margin
        assert own["share"] > 0.99 and own["permuted"]["loss_low"] > 0.01, own
        assert f"relies on the history ({head}, a past action)" in blind["verdicts"][head][0]["text"]

        assert sighted["copy_baseline"][head]["policy_r2"] > 0.999  # the construction held: it fits the split
        assert not _flags(sighted, head), sighted["verdicts"][head]
        assert sighted["verdicts"][head][0]["text"] == "relies on the frames"
        speed, frames = _reliance(sighted, head, "speed"), _reliance(sighted, head, "frames")
        assert speed["permuted"]["loss"] == 0.0 and speed["mean"]["loss"] == 0.0  # speed moves nothing
        assert frames["share"] == 1.0 and frames["permuted"]["loss_low"] > 0.05, frames


def test_the_figures_are_finite_and_shaped_as_the_inputs(runs: dict[str, str]) -> None:
    report = diagnose(DiagnoseRequest(runs["blind"], Path(runs["root"]), tracks=0))
    record = report.to_dict()
    for head, groups in record["reliance"].items():
        assert [g["group"] for g in groups] == ["frames", "steering", "accel_brake", "speed"]
        assert math.isclose(sum(g["share"] for g in groups), 1.0, abs_tol=1e-9)
        for g in groups:
            for effect in (g["permuted"], g["mean"]):
                assert all(math.isfinite(v) for v in effect.values())
                assert effect["loss_low"] <= effect["loss"] <= effect["loss_high"]
        copy = record["copy_baseline"][head]
        assert all(math.isfinite(v) and v <= 1.0 for v in copy.values())
    probe = record["probe"]
    assert probe["outputs"] == ["steering", "accel_brake"]
    # the last action is in the blind policy's history, so its joint features decode it well
    assert all(0.5 < probe["joint_r2"][o] <= 1.0 for o in probe["outputs"])
    assert all(math.isnan(probe["frames_r2"][o]) for o in probe["outputs"])  # it has no frame features
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(reliance_png(report)))
    assert picture.format == "PNG" and picture.size[0] > picture.size[1]  # one panel per head, side by side


def test_blank_frames_override_reaches_the_policy_while_driving(runs: dict[str, str]) -> None:
    runtime = PolicyRuntime.from_ref(runs["sighted"])
    env = make_env("carracing", max_steps=50)
    try:
        obs = env.reset(seed=10_000)
        frames = [obs]
        for _ in range(20):
            frames.append(env.step(np.array([0.0, 1.0], np.float32)).observation)
    finally:
        env.close()
    blank = np.full((3, *runtime.frame_shape[:2]), 100, np.uint8)
    runtime.override = InputOverride(frames=blank)
    seen = []
    original = runtime.pipeline.frames
    runtime.pipeline.frames = lambda x: (seen.append(x.clone()), original(x))[1]  # type: ignore[method-assign]
    runtime.reset(0)
    runtime.act(frames[0])
    runtime.act(frames[-1])
    assert all(torch.equal(s, torch.full_like(s, 100)) for s in seen) and len(seen) == 2


def test_cli_drives_the_ab_and_inertia_and_the_card_shows_the_verdict(runs: dict[str, str], tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "d.json", tmp_path / "d.png"
    result = run_cli_here("diagnose", runs["sighted"], "--tracks", "1", "--max-steps", "40",
                          "--set", "diagnose.stop_after_s=0.5",
                          "--json", str(out_json), "--plot", str(out_png))
    assert result.returncode == 0, result.stderr
    record = json.loads(out_json.read_text())
    assert list(record["closed_loop"]["variants"]) == ["normal", "history_mean", "blank_frames"]
    assert len(record["inertia"]["tracks"]) == 1 and record["inertia"]["tracks"][0]["start_s"] is not None
    blank = record["verdicts"]["policy"][0]  # read as a ratio only above the score floor
    normal = record["closed_loop"]["variants"]["normal"]["score_mean"]
    floor = record["thresholds"]["blank_min_score"]
    assert blank["figure"] == ("blank-frames score / normal score" if normal >= floor else "normal driving score")
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = Path(runs["sighted"]) / "diagnosis" / f"diagnosis_batch{BATCHES}.json"
    assert json.loads(saved.read_text())["verdicts"] == record["verdicts"]
    again = run_cli_here("diagnose", runs["sighted"], "--tracks", "0", "--json", str(out_json))
    assert again.returncode != 0 and "already exists" in again.stderr  # the user's file is kept
    from drivelab.reports.card import write_card
    from drivelab.runs.folder import RunFolder

    card = write_card(RunFolder.open(runs["sighted"])).markdown.read_text()
    assert "Diagnosis (copycat, shortcut, inertia)" in card and "relies on the frames" in card
    assert f"diagnosis/reliance_batch{BATCHES}.png" in card


@pytest.mark.parametrize(("args", "words"), [
    (["--split", "nope"], "a split is one of"),
    (["--split", "test"], "has no 'test' episodes"),
    (["--tracks", "1", "--seed", "5"], "must be held out"),
    (["--tracks", "-1"], "--tracks must be 0 or more"),
    (["--set", "train.lr=1"], "thresholds are diagnose.<key>=value"),
    (["--set", "diagnose.frames_share_min=2"], "frames_share_min"),
    (["train.lr=1"], "thresholds are diagnose.<key>=value"),  # positional, as every verb takes overrides
    (["diagnose.frames_share_min=2"], "frames_share_min"),
])
def test_bad_input_fails_in_one_line(runs: dict[str, str], args: list[str], words: str) -> None:
    result = run_cli_here("diagnose", runs["sighted"], "--tracks", "0", *args)
    assert result.returncode != 0 and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_run_without_a_checkpoint_fails_in_one_line(runs: dict[str, str], tmp_path: Path) -> None:
    import shutil

    empty = tmp_path / "sighted_v9"
    shutil.copytree(runs["sighted"], empty, ignore=shutil.ignore_patterns("checkpoints", "diagnosis"))
    result = run_cli_here("diagnose", str(empty), "--tracks", "0")
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "checkpoint" in result.stderr


def test_saved_report_is_regenerated_not_clobbered(runs: dict[str, str]) -> None:
    request = DiagnoseRequest(runs["blind"], Path(runs["root"]), tracks=0)
    first = save_report(diagnose(request), request)
    second = save_report(diagnose(request), request)  # drivelab's own files: regenerated
    assert first == second and all(p.is_file() for p in second)


def test_saved_figures_redraw_the_same_verdicts_and_follow_new_thresholds(runs: dict[str, str]) -> None:
    from drivelab.config.diagnose_section import DiagnoseConfig
    from drivelab.diagnose.report import DiagnosisReport

    record = json.loads(diagnose(DiagnoseRequest(runs["blind"], Path(runs["root"]), tracks=0)).to_json())
    assert DiagnosisReport.from_dict(record).to_dict()["verdicts"] == record["verdicts"]
    lenient = DiagnoseConfig(frames_share_min=0.0, copy_r2_max=1.0, probe_gap_max=10.0)
    redrawn = DiagnosisReport.from_dict(record, lenient).to_dict()["verdicts"]
    assert not any(f["flagged"] for findings in redrawn.values() for f in findings), redrawn


def _group(name: str, share: float):  # a GroupReliance
    from drivelab.diagnose.reliance import Effect, GroupReliance

    effect = Effect(share, share, share, share, share, share)
    return GroupReliance(name, effect, effect, share)


def test_history_reliance_names_copycat_for_past_actions_and_shortcut_for_speed() -> None:
    from drivelab.config.diagnose_section import DiagnoseConfig
    from drivelab.diagnose.probe import ProbeResult
    from drivelab.diagnose.verdict import verdicts

    config, probe = DiagnoseConfig(), ProbeResult([], {}, {})
    on_actions = {"steering": [_group("frames", 0.1), _group("speed", 0.2), _group("steering", 0.7)]}
    on_speed = {"steering": [_group("frames", 0.1), _group("speed", 0.7), _group("steering", 0.2)]}
    actions = {"steering", "accel_brake"}
    first = verdicts(on_actions, {}, probe, actions, None, None, config)["steering"][0]
    second = verdicts(on_speed, {}, probe, actions, None, None, config)["steering"][0]
    assert first.flagged and "copycat risk" in first.text and "steering" in first.text
    assert second.flagged and "shortcut risk" in second.text and "speed" in second.text
    assert first.value == 0.1 and first.threshold == config.frames_share_min


def test_closed_loop_findings_read_the_score_floor_and_count_failed_starts() -> None:
    from drivelab.config.diagnose_section import DiagnoseConfig
    from drivelab.diagnose.closed_loop import ClosedLoopAB
    from drivelab.diagnose.inertia import InertiaReport, InertiaTrack
    from drivelab.diagnose.verdict import policy_findings

    config = DiagnoseConfig()
    weak = ClosedLoopAB([10000], {"normal": {"score_mean": 0.05}, "blank_frames": {"score_mean": 0.05}}, 1.0)
    good = ClosedLoopAB([10000], {"normal": {"score_mean": 0.6}, "blank_frames": {"score_mean": 0.5}}, 1.0)
    tracks = [InertiaTrack(10000, None, None, False), InertiaTrack(10001, 0.1, None, True),
              InertiaTrack(10002, 0.1, 0.2, True)]
    weak_found, inertia_found = policy_findings(weak, InertiaReport(tracks, 1.0), config)
    assert not weak_found.flagged and "too poorly" in weak_found.text and weak_found.value == 0.05
    assert inertia_found.flagged and inertia_found.value == 2
    assert "fails to start on 1 of 3 tracks and to restart after 1 of 2 forced stops" in inertia_found.text
    (blind,) = policy_findings(good, None, config)
    assert blind.flagged and "not looking at the road" in blind.text and math.isclose(blind.value, 0.5 / 0.6)


def test_history_dropout_zeroes_whole_samples_in_training_only() -> None:
    from drivelab.config.head_section import HeadConfig
    from drivelab.config.model_section import HistoryConfig
    from drivelab.models.history import HistoryBranch

    config = HistoryConfig(signals=["steering", "speed"], length=4, kind="dense", width=8, dropout=0.5)
    branch = HistoryBranch(config, [HeadConfig(output="steering")])
    window = torch.randn(256, 4, 2)
    torch.manual_seed(0)
    vector, _ = branch.train()(window)
    dropped = (vector == 0).all(dim=1)
    assert 0.3 < dropped.float().mean() < 0.7  # about half the samples lose the whole vector
    assert (vector[~dropped] != 0).any(dim=1).all()  # the others keep theirs
    assert (branch.eval()(window)[0] != 0).any(dim=1).all()  # never at inference
