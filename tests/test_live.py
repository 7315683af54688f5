"""`drivelab live` / `drivelab dagger` with real parts: CarRacing, Zarr stores, PilotNet at 64x64, Ray.

One local Ray for the module (num_cpus=2, an 80 MiB object store). The live driver that is
interrupted and killed runs as a real `drivelab live` subprocess joined to that Ray
(``--address``), so the module starts Ray once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PILOTNET, quick, run_cli_here
from drivelab.config import load_config
from drivelab.config.live_section import BetaConfig
from drivelab.data.inspect import verify_dataset
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.live.beta import ExecutorDraw, beta_at
from drivelab.live.ledger import read_ledger

ray = pytest.importorskip("ray")


def live_overrides(dataset: Path, *extra: str) -> list[str]:
    """A live run that turns in seconds: 40-step episodes, a version every 20 batches of 8."""
    return quick(dataset, "data.val_split=null", "train.checkpoint_every=10", "train.log_every=5",
                 "train.val_every=1000", "train.warmup_batches=0", "live.max_steps=40",
                 "live.refresh_every=20", "live.player.max_steps=40", "live.player.tracks=2",
                 "live.beta.per=step", *extra)


@pytest.fixture(scope="module")
def local_ray():
    from drivelab.sweep.resources import worker_env

    context = ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False,
                       log_to_driver=False, runtime_env={"env_vars": worker_env(1)})
    yield context.address_info["gcs_address"]
    ray.shutdown()


def label_rows(store: DatasetStore, index: int) -> np.ndarray:
    """The episode's recorded labels as [T, actions] in the env's action order."""
    names = [s.name for s in store.meta.actions]
    return np.concatenate([store.read_array(index, f"actions/{n}") for n in names], axis=1)


def committed_attrs(dataset: Path) -> list[dict]:
    return [e.attrs for e in DatasetStore.open(dataset).episodes()]


# ---------------------------------------------------------------------------------- no Ray
def test_bad_live_input_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    data = tmp_path / "d.zarr"
    cases = {
        "no live: section": ["live", str(PILOTNET), f"data.path={data}"],
        "needs a stop": ["live", str(PILOTNET), f"data.path={data}", "live.collectors=2"],
        "beta.floor": ["live", str(PILOTNET), f"data.path={data}", "live.stop.batches=5",
                       "live.beta.floor=0.9", "live.beta.start=0.5"],
        "live.player.seed": ["live", str(PILOTNET), f"data.path={data}", "live.stop.batches=5",
                             "live.player.seed=3"],
        "--collectors must be": ["live", str(PILOTNET), f"data.path={data}", "live.stop.batches=5",
                                 "--collectors", "0"],
        "data.val_split=null": ["live", str(PILOTNET), f"data.path={data}", "live.stop.batches=5"],
        "--rounds must be": ["dagger", str(PILOTNET), f"data.path={data}", "--rounds", "-1"],
        "CONFIG for a new live run": ["live"],
        "--dagger-rounds": ["demo", "--out", str(tmp_path / "demo"), "--dagger", "--dagger-rounds", "-1"],
    }
    for expected, args in cases.items():
        result = run_cli_here(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (expected, result.stdout, result.stderr)
        assert len(lines) == 1 and expected in lines[0], (expected, lines)
    assert not data.exists() and not (tmp_path / "demo").exists()  # refused before any work


def test_beta_schedules_and_the_draw() -> None:
    exp = BetaConfig(schedule="exponential", start=1.0, p=0.5)
    assert [beta_at(exp, i) for i in range(4)] == [1.0, 0.5, 0.25, 0.125]
    lin = BetaConfig(schedule="linear", start=0.9, step=0.3, floor=0.2)
    assert [round(beta_at(lin, i), 6) for i in range(5)] == [1.0, 0.6, 0.3, 0.2, 0.2]
    const = BetaConfig(schedule="constant", start=0.3)
    assert [beta_at(const, i) for i in range(3)] == [1.0, 0.3, 0.3]  # round 0 has no policy yet
    steps = ExecutorDraw(0.3, "step", np.random.default_rng(1))
    share = np.mean([steps.expert_executes() for _ in range(4000)])
    assert abs(share - 0.3) < 0.03
    episodes = [ExecutorDraw(0.3, "episode", np.random.default_rng(s)) for s in range(400)]
    whole = [{d.expert_executes() for _ in range(20)} for d in episodes]
    assert all(len(w) == 1 for w in whole)  # an episode is wholly the expert's or the policy's
    assert abs(np.mean([w == {True} for w in whole]) - 0.3) < 0.07


def run_small_dagger(root: Path) -> tuple[Path, dict]:
    from drivelab.live.dagger import run_dagger

    data = root / "d.zarr"
    config = load_config(PILOTNET, live_overrides(
        data, "live.beta.schedule=constant", "live.beta.start=0.5", "live.round_episodes=2",
        "live.round_batches=20", "live.stop.batches=40"))
    return data, run_dagger(config, root / "runs", rounds=1, say=lambda _line: None)


def test_dagger_labels_every_frame_with_the_expert_and_is_deterministic(tmp_path: Path) -> None:
    from drivelab.runs.checkpoints import list_checkpoints, load_weights, weights_path
    from drivelab.sim import make_env, make_expert

    threads = torch.get_num_threads()
    data, summary = run_small_dagger(tmp_path / "a")
    assert summary["episodes"] == 4 and summary["batch"] == 40
    assert torch.get_num_threads() == threads  # in-process rounds keep the caller's thread pool
    store = DatasetStore.open(data)
    episodes = store.episodes()
    assert [e.attrs["live_round"] for e in episodes] == [0, 0, 1, 1]
    assert [e.attrs["live_beta"] for e in episodes] == [1.0, 1.0, 0.5, 0.5]
    assert [e.attrs["policy_version"] for e in episodes] == [0, 0, 1, 1]
    env = make_env("carracing", max_steps=40)
    expert = make_expert(env)
    policy_frames = 0
    for info in episodes:
        who, executed = info.attrs["live_executor"], np.asarray(info.attrs["live_executed"], np.float32)
        labels, perturbed = label_rows(store, info.index), store.read_array(info.index, "perturbed")
        assert len(who) == len(executed) == len(labels) == info.length
        # replay the executed actions: the expert, asked in every state visited, gives the labels
        env.reset(seed=int(info.attrs["track_seed"]))
        expert.reset()
        for t in range(info.length):
            np.testing.assert_array_equal(np.asarray(expert.act(env), np.float32), labels[t])
            env.step(executed[t])
        mine = np.array([c == "p" for c in who])
        differs = np.any(executed != labels, axis=1)
        assert not np.any(differs[~mine])  # no noise: the expert's turns execute the label
        np.testing.assert_array_equal(perturbed, differs)
        policy_frames += int(mine.sum())
        if info.attrs["live_round"] == 1:
            assert 0 < mine.sum() < info.length  # β = 0.5 per step: both drove
            assert np.any(differs[mine])  # the policy's actions were executed, not the labels
    env.close()
    assert policy_frames > 20
    # the same commits give the same data and the same weights
    data_b, summary_b = run_small_dagger(tmp_path / "b")
    store_b = DatasetStore.open(data_b)
    for a, b in zip(episodes, store_b.episodes(), strict=True):
        np.testing.assert_array_equal(label_rows(store, a.index), label_rows(store_b, b.index))
    runs = [Path(summary["run"]), Path(summary_b["run"])]
    last = [list_checkpoints(r / "checkpoints")[-1] for r in runs]
    assert last[0] == last[1] == 40
    wa, wb = (load_weights(weights_path(r / "checkpoints", 40)) for r in runs)
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


# --------------------------------------------------------------------------------- on Ray
def kill_a_collector_when(run_root: Path, dataset: Path, killed: dict) -> None:
    """Kill -9 collector 0's worker process once 3 episodes are committed (a crash mid-episode)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        ledgers = list(run_root.glob("*/*/live.jsonl"))
        rows = read_ledger(ledgers[0].parent) if ledgers else []
        pids = [r["pid"] for r in rows if r["kind"] == "collector" and r["collector"] == 0]
        if pids and dataset.exists() and len(DatasetStore.open(dataset).episodes()) >= 3:
            time.sleep(0.3)  # into the next episode
            os.kill(pids[0], signal.SIGKILL)
            killed.update(pid=pids[0], at=time.time())
            return
        time.sleep(0.2)


def test_live_run_grows_the_dataset_swaps_versions_and_survives_a_collector_crash(
    tmp_path: Path, local_ray: str
) -> None:
    from drivelab.live.runner import run_live

    data, runs = tmp_path / "d.zarr", tmp_path / "runs"
    config = load_config(PILOTNET, live_overrides(data, "live.collectors=2", "live.stop.seconds=45"))
    killed: dict = {}
    killer = threading.Thread(target=kill_a_collector_when, args=(runs, data, killed), daemon=True)
    killer.start()
    summary = run_live(config, runs, say=lambda _line: None)
    killer.join(timeout=5)
    # a machine so loaded that no trainer period ended in the 45 s says so (not a TypeError)
    assert summary["run"] is not None, f"no trainer period ended before the stop: {summary}"
    run = Path(summary["run"])
    rows = read_ledger(run)
    periods = [r for r in rows if r["kind"] == "period"]
    assert len(periods) >= 3
    assert periods[-1]["frames"] > periods[0]["frames"]  # the trainer saw the dataset grow
    assert [p["frames"] for p in periods] == sorted(p["frames"] for p in periods)
    plays = [r for r in rows if r["kind"] == "play"]
    assert len({p["version"] for p in plays}) >= 2  # the player drove at least two versions
    assert all(p["hot_swap_s"] >= 0 for p in plays if p["swapped"])
    watch_rows = [json.loads(line) for line in (run / "watch.jsonl").read_text().splitlines()]
    assert len(watch_rows) >= len(plays) and all("watch/score" in w for w in watch_rows)
    assert list((run / "tb" / "live").glob("events.out.tfevents.*"))
    assert list((run / "tb" / "watch").glob("events.out.tfevents.*"))
    # β per episode follows the schedule of the version that drove it (exponential, p = 0.5)
    beta = config.live.beta
    for attrs in committed_attrs(data):
        assert attrs["live_beta"] == beta_at(beta, attrs["policy_version"]) or attrs["policy_version"] == 0
    # the crash: logged, the slot driven again, the collector restarted and committing again
    assert killed, "the collector was never killed"
    crashes = [r for r in rows if r["kind"] == "crash"]
    assert [c["collector"] for c in crashes] == [0]
    after = [r for r in rows if r["kind"] == "episode" and r["collector"] == 0 and r["committed_at"] > killed["at"]]
    assert after and crashes[0]["slot"] in [r["slot"] for r in after]
    store = DatasetStore.open(data)
    report = verify_dataset(store)
    assert report.ok, report.problems  # every committed episode whole; a staging leftover at worst
    slots = [a["live_slot"] for a in committed_attrs(data)]
    assert len(slots) == len(set(slots)) == summary["episodes"]


def wait_for(predicate, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError("timed out")


def test_ctrl_c_then_kill_9_then_resume(tmp_path: Path, local_ray: str) -> None:
    from drivelab.errors import Interrupted
    from drivelab.live.runner import run_live
    from drivelab.runs.checkpoints import list_checkpoints

    data, runs = tmp_path / "d.zarr", tmp_path / "runs"
    config = load_config(PILOTNET, live_overrides(data, "live.stop.batches=400", "live.player.enabled=false"))

    def ctrl_c(line: str) -> None:  # Ctrl-C arrives while the driver handles the first version
        if line.startswith("batch"):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as stopped:
        run_live(config, runs, say=ctrl_c)
    message = str(stopped.value)
    assert len(message.splitlines()) == 1 and "episodes committed" in message and "--resume" in message
    run = next(runs.glob("*/*_v1"))

    def versions() -> list[dict]:
        return [r for r in read_ledger(run) if r["kind"] == "version"]

    seen = len(versions())
    driver = subprocess.Popen(
        [sys.executable, "-m", "drivelab.cli", "live", "--resume", str(run), "--runs", str(runs),
         "--address", local_ray], env={**os.environ, "SDL_VIDEODRIVER": "dummy"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(versions()) >= seen + 2, 120)  # the resumed one, then a new checkpoint
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            driver.kill()
    time.sleep(2)  # Ray ends the dead driver's actors
    killed_at = list_checkpoints(run / "checkpoints")[-1]
    assert verify_dataset(DatasetStore.open(data)).ok  # committed episodes intact after kill -9
    episodes_before = len(DatasetStore.open(data).episodes())
    summary = run_live(None, runs, resume=str(run), overrides=[f"live.stop.batches={killed_at + 40}"],
                       say=lambda _line: None)
    assert summary["batch"] == killed_at + 40
    rows = read_ledger(run)
    resumed = [r for r in rows if r["kind"] == "version" and r.get("resumed")]
    assert len(resumed) == 2 and resumed[-1]["batch"] == killed_at
    periods = [r for r in rows if r["kind"] == "period"]
    assert periods[-1]["first_batch"] >= killed_at  # continued, not restarted
    assert len(DatasetStore.open(data).episodes()) >= episodes_before
    slots = [a["live_slot"] for a in committed_attrs(data)]
    assert len(slots) == len(set(slots))  # no track collected twice across the three drivers
    # the resume's live.* override is the run's config now; anything else would be ignored: refused
    assert load_config(run / "config.yaml").live.stop.batches == killed_at + 40
    with pytest.raises(DrivelabError, match=r"only the loop \(live\.\*\), not train\.lr"):
        run_live(None, runs, resume=str(run), overrides=["train.lr=0.5"], say=lambda _line: None)


def test_live_on_the_traffic_world(tmp_path: Path, local_ray: str) -> None:
    """`drivelab live` unchanged on the intersection (issue 31): a collector's expert episodes,
    the policy driving once published (beta 0), the player, all in the config's world."""
    from drivelab.live.runner import run_live

    world = "intersection:density=0.5,frame_size=32"
    data, runs = tmp_path / "t.zarr", tmp_path / "runs"
    config = load_config(PILOTNET.parent.parent / "traffic" / "intersection_pilotnet.yaml", quick(
        data, "data.val_split=null", "data.cache=none", "model.backbone.name=tiny", "train.checkpoint_every=2",
        "train.log_every=2", "train.val_every=1000", "train.warmup_batches=0", f"live.env={world}",
        "live.max_steps=12", "live.warmup_episodes=1", "live.refresh_every=2", "live.stop.batches=4",
        "live.player.tracks=1", "live.player.max_steps=8", "live.beta.start=0", size=32))
    summary = run_live(config, runs, say=lambda _line: None)
    assert summary["batch"] == 4 and summary["episodes"] >= 1
    assert DatasetStore.open(data).meta.world_name() == world
    run = Path(summary["run"])
    assert json.loads((run / "run.json").read_text())["provenance"]["env"] == world
    assert all(a["env_id"] == "TrafficIntersection-v0" for a in committed_attrs(data))
