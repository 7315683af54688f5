"""`drivelab data view`: the page and its videos from a real (tiny) store, checked in a real headless
Chromium (no console error, the video plays, the cursor follows the video and moves the plots),
refusals in one line, and a run's predictions drawn beside the labels."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import quick, run_cli_here
from drivelab.data.store import DatasetStore
from test_data_edit import make_store

ROOT = Path(__file__).resolve().parents[1]


def page_data(index: Path) -> dict:
    match = re.search(r'<script type="application/json" id="view-data">(.*?)</script>', index.read_text(), re.S)
    assert match is not None
    return json.loads(match.group(1).replace("<\\/", "</"))


@pytest.fixture
def view(tmp_path: Path) -> Path:
    data = make_store(tmp_path / "data", lengths=(40, 30, 25), val=[1], live=True)
    result = run_cli_here("data", "view", str(data), "--episodes", "1,2", "--out", str(tmp_path / "view"))
    assert result.returncode == 0, result.stderr
    assert "2 episode video(s) of 3 listed" in result.stdout
    return tmp_path / "view"


def test_page_lists_every_episode_and_carries_every_signal(view: Path) -> None:
    assert sorted(p.name for p in view.iterdir() if not p.name.startswith(".")) == [
        "episode_000001.mp4", "episode_000002.mp4", "index.html"]
    html = (view / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # opens with no network
    assert html.count('<tr class="pick"') == 2 and html.count("<tr") == 4  # 3 episodes + header, 2 viewable
    assert "policy-driven from live/dagger" in html and ">0.50<" in html  # source, beta of round 1
    data = page_data(view / "index.html")
    first = data["episodes"][0]
    assert [e["index"] for e in data["episodes"]] == [1, 2] and first["split"] == "val" and first["length"] == 30
    labels = [s["label"] for s in first["series"]]
    assert labels == ["actions/steer", "actions/throttle", "telemetry/speed", "reward", "perturbed / policy drove"]
    speed = first["series"][2]["lines"][0]["values"]
    assert speed == [100.0 + k for k in range(30)]  # the stored values, in frame order
    import av

    with av.open(str(view / "episode_000001.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and sum(1 for _ in container.decode(stream)) == 30


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no Chromium here (the check runs where it is installed)")
def test_page_plays_in_headless_chromium_and_the_cursor_moves_the_plots(view: Path, tmp_path: Path) -> None:
    shot = tmp_path / "view.png"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_data_view.py"), str(view / "index.html"),
                           "--screenshot", str(shot), "--episode", "2", "--frame", "12"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["errors"] == [] and result["video_error"] is None and result["plots"] == 5
    assert result["time_after_play"] > 0 and result["frame_after_play"] > 0  # the video played, the cursor followed
    assert result["cursor_after_slider"] > result["cursor_after_play"] > result["cursor_before"]
    assert result["frame_after_slider"] == 29 and result["video_time_after_slider"] == pytest.approx(2.95, abs=0.06)
    with Image.open(shot) as image:
        assert np.asarray(image.convert("L")).std() > 5


def test_bad_input_is_one_line_and_nothing_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_store(tmp_path / "data", lengths=(5, 6))
    for args, message in ((["--episodes", "1,7"], "episode(s) 7 are not committed episodes"),
                          (["--episodes", "x"], "is not an episode index"),
                          (["--out", str(data / "inside")], "refusing to write there")):
        result = run_cli_here("data", "view", str(data), "--out", str(tmp_path / "v"), *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
        assert not (tmp_path / "v").exists() and not (data / "inside").exists()
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    result = run_cli_here("data", "view", str(data), "--out", str(tmp_path / "v"))
    assert result.returncode == 2 and "pip install 'drivelab[interop]'" in result.stderr
    assert not (tmp_path / "v").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "index.html").write_text("my own page")
    result = run_cli_here("data", "view", str(data), "--out", str(tmp_path / "mine"))
    assert result.returncode == 2 and "was not written by drivelab" in result.stderr
    assert (tmp_path / "mine" / "index.html").read_text() == "my own page"


@pytest.mark.slow  # trains a 2-batch run (~15 s idle, more on a loaded machine)
def test_run_predictions_are_drawn_beside_the_labels(small_dataset: Path, tmp_path: Path) -> None:
    from drivelab.config import load_config
    from drivelab.train import train

    runs = tmp_path / "runs"
    overrides = quick(small_dataset, "line=view", "train.max_batches=2", "train.val_every=2",
                      "train.checkpoint_every=2", "train.warmup_batches=0", "train.log_every=1")
    train(load_config(ROOT / "configs" / "carracing" / "pilotnet.yaml", overrides), runs_root=runs)
    store = DatasetStore.open(small_dataset)
    val = store.split_episodes("val")[0].index
    result = run_cli_here("data", "view", str(small_dataset), "--episodes", f"0,{val}", "--run", "view_v1",
                          "--runs", str(runs), "--out", str(tmp_path / "view"))
    assert result.returncode == 0, result.stderr
    for episode in page_data(tmp_path / "view" / "index.html")["episodes"]:
        for series in episode["series"][:len(store.meta.actions)]:
            label, predicted = series["lines"][0], series["lines"][-1]
            assert predicted["name"] == "predicted" and predicted["dashed"]
            assert len(predicted["values"]) == len(label["values"]) == episode["length"]
            assert all(isinstance(v, float) for v in predicted["values"])
