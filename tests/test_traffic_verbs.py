"""Every verb on the traffic world (issue 31, item 4), unchanged, at toy sizes.

One `drivelab demo --env intersection ... --dagger` per module builds the tiny dataset (3
expert episodes of 32x32 frames) and a run: behaviour cloning, then one DAgger round; every
other test runs one verb on them through the command line in this process (`run_cli_here`).
The world a run was trained in is recorded with it (`drivelab.runs.world`): no test here names
``--env``, except to check that another world is refused. `drivelab live` on this world is in
`test_live.py`, which starts Ray once for its module.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import CONFIGS, run_cli_here

#: The world of the module: options recorded with the data and the run, and driven by default.
WORLD = "intersection:density=0.5,frame_size=32"
TINY = ["data.input_size=[32,32]", "model.backbone.name=tiny", "train.batch_size=8", "data.cache=none",
        "train.warmup_batches=1", "train.log_every=2", "train.val_every=4", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`demo --env intersection` end to end, tiny, with one DAgger round; what it made."""
    root = tmp_path_factory.mktemp("traffic-demo")
    sets = [arg for s in TINY for arg in ("--set", s)]
    done = run_cli_here("demo", "--env", WORLD, "--out", str(root), "--episodes", "3", "--max-steps", "25",
                        "--batches", "4", "--eval-episodes", "1", "--workers", "1", "--noise", "0.1",
                        "--dagger", "--dagger-rounds", "1", *sets)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = next(root.glob("demo-*"))
    report = json.loads((folder / "report.json").read_text())
    # the DAgger round continued the behaviour-cloning run: one run, trained on both
    return {"folder": folder, "stdout": done.stdout, "report": report, "data": folder / "data.zarr",
            "runs": folder / "runs", "run": Path(report["run"])}


def test_demo_on_the_intersection(demo: dict) -> None:
    report, stdout = demo["report"], demo["stdout"]
    assert [e["driver"] for e in report["evaluation"]] == [demo["run"].name, "expert"]
    assert all(e["env"] == WORLD for e in report["evaluation"])
    assert all("success_rate" in e["aggregate"] for e in report["evaluation"])
    assert "route outcomes" in stdout and "laps" not in stdout and "where things are" in stdout
    markdown = (demo["folder"] / "report.md").read_text()
    assert "| success |" in markdown and "laps" not in markdown and WORLD in markdown
    # the world travels: the dataset names it (options included), each run records it
    assert json.loads((demo["data"] / "zarr.json").read_text())["attributes"]["env"] == WORLD
    assert json.loads((demo["run"] / "run.json").read_text())["provenance"]["env"] == WORLD


def test_data_info_plots_the_command(demo: dict, tmp_path: Path) -> None:
    plot = tmp_path / "hist.png"
    done = run_cli_here("data", "info", str(demo["data"]), "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    assert "command" in done.stdout
    width = struct.unpack(">I", plot.read_bytes()[16:20])[0]
    assert width == round(4 * 4.2 * 110), "4 panels: steering, accel_brake, speed, the command's bars"


def test_another_world_is_refused_naming_both(demo: dict, tmp_path: Path) -> None:
    for other, other_id in (("roundabout", "TrafficRoundabout-v0"), ("carracing", "CarRacing-v3")):
        done = run_cli_here("eval", str(demo["run"]), "--env", other, "--episodes", "1")
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "TrafficIntersection-v0" in done.stderr and other_id in done.stderr
    # the intersection's data given to the roundabout's config: refused, no run folder made
    runs = tmp_path / "runs"
    done = run_cli_here("train", str(CONFIGS / "traffic" / "roundabout_pilotnet.yaml"),
                        f"data.path={demo['data']}", *TINY, "--runs", str(runs), "--no-progress")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "TrafficIntersection-v0" in done.stderr and "TrafficRoundabout-v0" in done.stderr
    assert not runs.exists() or not any(runs.iterdir())
    # a bad scenario option for the demo: one line before its folder exists
    done = run_cli_here("demo", "--env", "intersection:densty=2", "--out", str(tmp_path / "demo"))
    assert done.returncode == 2 and "densty" in done.stderr and "density" in done.stderr
    assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").iterdir())


def test_a_resumed_runs_world_is_checked_with_the_data(demo: dict) -> None:
    """The trainer's data check refuses data of another world than a resumed run's (the dataset
    at its path may have been replaced), both ids named; options may differ."""
    from drivelab.config import load_config
    from drivelab.runs.world import WorldMismatch
    from drivelab.train.inputs import check_data

    config = load_config(demo["run"] / "config.yaml")
    assert check_data(config, (WORLD.replace("0.5", "2"), "run_a")).facts.world == WORLD
    with pytest.raises(WorldMismatch, match=r"run_b was trained in TrafficRoundabout-v0 .*TrafficIntersection-v0"):
        check_data(config, ("roundabout", "run_b"))


def test_options_may_differ_within_a_world() -> None:
    from drivelab.runs.world import WorldMismatch, env_for
    from drivelab.seeds import DEFAULT_ENV

    assert env_for(WORLD, None, "r") == WORLD  # nothing given: the run's own world
    assert env_for(WORLD, "intersection:density=2", "r") == "intersection:density=2"
    assert env_for(None, None, "r") == DEFAULT_ENV  # data without a world (an import)
    assert env_for(None, "roundabout", "r") == "roundabout"
    with pytest.raises(WorldMismatch, match="TrafficRoundabout-v0"):
        env_for(WORLD, "roundabout:density=2", "r")


def test_export_then_eval_the_file_in_its_world(demo: dict, tmp_path: Path) -> None:
    onnx, out = tmp_path / "policy.onnx", tmp_path / "eval.json"
    done = run_cli_here("export", str(demo["run"]), "--out", str(onnx), "--frames", "8")
    assert done.returncode == 0, done.stderr
    assert "parity passed" in done.stdout and onnx.is_file()
    done = run_cli_here("eval", str(onnx), "--episodes", "1", "--max-steps", "10", "--workers", "1",
                        "--json", str(out))
    assert done.returncode == 0, done.stderr
    (driver,) = json.loads(out.read_text())["drivers"]
    assert driver["env"] == WORLD and driver["episodes"][0]["outcome"] is not None


def test_diagnose_on_the_runs_world(demo: dict, tmp_path: Path) -> None:
    """The offline tests through the verb; the closed-loop part's standing-start test driven
    here in the run's world (the verb's A/B drives three evaluations: too dear for the suite)."""
    from drivelab.config.diagnose_section import DiagnoseConfig
    from drivelab.diagnose.inertia import inertia_track
    from drivelab.evaluate.drivers import DriverSpec
    from drivelab.runs.folder import RunFolder
    from drivelab.runs.world import recorded_env

    out = tmp_path / "diagnosis.json"
    done = run_cli_here("diagnose", str(demo["run"]), "--tracks", "0", "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert "command" in json.dumps(report["reliance"])  # the route command's reliance is measured
    env = recorded_env(RunFolder.open(demo["run"]))
    assert env == WORLD
    track = inertia_track(env, DriverSpec("policy", str(demo["run"]), str(demo["runs"])), 10_000,
                          DiagnoseConfig(start_timeout_s=1.0, stop_after_s=0.4, stop_hold_s=0.4))
    assert track.seed == 10_000 and (track.start_s is None or 0 < track.start_s <= 1.0)


def test_a_command_no_training_frame_had_is_centred_not_blown_up() -> None:
    """A one-hot component constant over the training split gets std 1: a command seen only at
    drive time enters as 1 - mean, not as 1e6 (which made the policy's answers garbage)."""
    from types import SimpleNamespace

    from drivelab.processor.statistics import history_statistics

    moments = {"telemetry/command": SimpleNamespace(mean=[0.4, 0.0, 0.6], std=[0.49, 0.0, 0.49])}
    mean, std = history_statistics(["command"], moments)
    assert std == (0.49, 1.0, 0.49) and mean == (0.4, 0.0, 0.6)


def test_watch_drives_the_datasets_world(demo: dict, tmp_path: Path) -> None:
    done = run_cli_here("train", str(CONFIGS / "traffic" / "intersection_pilotnet.yaml"), f"data.path={demo['data']}",
                        *TINY, "train.max_batches=2", "--runs", str(tmp_path), "--no-progress",
                        "--watch-every", "2", "--watch-steps", "5")
    assert done.returncode == 0, done.stderr
    run = next(tmp_path.glob("*/*_v1"))
    rows = [json.loads(line) for line in (run / "watch.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in rows] == [2] and rows[0]["watch/steps"] >= 1
    assert rows[0]["watch/outcome"] in {"success", "collision", "route_failure", "timeout"}
    periods = json.loads((run / "periods.json").read_text())
    assert periods[-1]["watch"]["env"] == WORLD


def test_dagger_labels_the_states_the_policy_reached(demo: dict) -> None:
    """The traffic expert labels every frame of the policy's episode: replaying the executed
    actions, it answers the recorded labels in every state the policy drove to."""
    from drivelab.data.store import DatasetStore
    from drivelab.sim import make_env, make_expert

    store = DatasetStore.open(demo["data"])
    rounds = [e for e in store.episodes() if e.attrs.get("live_round") == 1]
    assert rounds, "the DAgger round committed its episode"
    env = make_env(WORLD, max_steps=25)
    expert = make_expert(env)
    try:
        for info in rounds:
            executed = np.asarray(info.attrs["live_executed"], np.float32)
            names = [s.name for s in store.meta.actions]
            labels = np.concatenate([store.read_array(info.index, f"actions/{n}") for n in names], axis=1)
            env.reset(seed=int(info.attrs["track_seed"]))
            expert.reset()
            for t in range(info.length):
                np.testing.assert_allclose(np.asarray(expert.act(env), np.float32), labels[t], atol=1e-6)
                env.step(executed[t])
    finally:
        env.close()


def test_eval_in_the_runs_world_with_its_columns_then_the_card(demo: dict, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    done = run_cli_here("eval", str(demo["run"]), "--episodes", "1", "--max-steps", "15", "--workers", "1",
                        "--json", str(out))  # also kept with the run, for its card
    assert done.returncode == 0, done.stderr
    (driver,) = json.loads(out.read_text())["drivers"]
    assert driver["env"] == WORLD  # no --env: the world the run was trained in
    assert driver["episodes"][0]["outcome"] in {"success", "collision", "route_failure", "timeout"}
    for column in ("success", "crash", "wrong", "t-out"):
        assert column in done.stdout
    assert "off/stuck" not in done.stdout
    done = run_cli_here("card", str(demo["run"]), "--runs", str(demo["runs"]), "--html")
    assert done.returncode == 0, done.stderr
    card = (demo["run"] / "card.md").read_text()
    assert "| success | collisions / episode |" in card and f"World: `{WORLD}`" in card
    assert "| laps |" not in card and (demo["run"] / "card.html").is_file()
