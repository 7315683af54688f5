"""Reports over real runs: `runs`, model cards (Markdown + self-contained HTML), `compare`.

Two tiny real runs are trained once for the module (PilotNet at 64x64, a dozen batches); one is
driven closed-loop in the real CarRacing sim for a couple of short episodes so its card has a
results table and a GIF. TensorBoard input is the real Keras log of Charles's model_0004 v3
(tensor summaries) and a PyTorch `SummaryWriter` log written here.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util
from typer.testing import CliRunner, Result

from conftest import quick, run_cli_here
from drivelab.cli import app
from drivelab.config import ModelConfig, load_config
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.models.summary import summarize_config
from drivelab.reports.compare import CompareOptions, collect_curves, ema, prepare
from drivelab.reports.events import ReportError, Series, find_tag, read_tensorboard, resolve_source
from drivelab.reports.lines import scan_lines
from drivelab.runs.folder import RunFolder
from drivelab.runs.provenance import dataset_checksum
from drivelab.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "carracing" / "pilotnet.yaml"
#: A real Keras TensorBoard log of Charles's model_0004_inceptionresnetv2 v3 (batches 22251-22260).
CHARLES = Path(__file__).resolve().parent / "fixtures" / "charles"
LINE = "rep"
HAS_FREEZE = "freeze" in ModelConfig.model_fields
HAS_INIT_FROM = "init_from" in ModelConfig.model_fields


def tiny(dataset: Path, *extra: str) -> list[str]:
    return quick(
        dataset,
        f"line={LINE}",
        "train.log_every=2",
        "train.warmup_batches=0",
        "train.max_batches=12",
        "train.val_every=6",
        "train.checkpoint_every=6",
        "notes=Tiny run for the report tests.",
        *extra,
        batch_size=8,
    )


@pytest.fixture(scope="module")
def runs_root(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rep_v1 (plain), rep_v2 (lr 3e-4, backbone frozen) and rep_v3 (backbone from rep_v1@6).

    Freezing and init_from are used where the config schema has them.
    """
    root = tmp_path_factory.mktemp("runs")
    train(load_config(CONFIG, tiny(small_dataset)), runs_root=root)
    frozen = ["model.freeze=[backbone.*]"] if HAS_FREEZE else []
    train(load_config(CONFIG, tiny(small_dataset, "train.lr=0.0003", *frozen)), runs_root=root)
    init = [f"model.init_from=[{{source: {LINE}/{LINE}_v1@6, modules: [backbone.*]}}]"] if HAS_INIT_FROM else []
    train(load_config(CONFIG, tiny(small_dataset, *init)), runs_root=root)
    return root


@pytest.fixture(scope="module")
def evaluated(runs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rep_v1 driven on one real track next to the expert (a short episode), with a GIF."""
    videos = tmp_path_factory.mktemp("videos")
    done = run_cli_here("eval", f"{LINE}_v1", "--runs", str(runs_root), "--episodes", "1", "--seed", "10000",
                   "--workers", "1", "--max-steps", "40", "--baseline", "expert", "--video", str(videos))
    assert done.returncode == 0, done.stderr
    assert "kept with the run" in done.stdout
    return runs_root / LINE / f"{LINE}_v1"


def cli(*args: str) -> Result:
    """The CLI in this process (the subprocess `run_cli` costs an interpreter start each)."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "160"})


def cli_ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def cli_error(*args: str) -> str:
    """The one-line DrivelabError message the command stops with (`main` prints it, exits 2)."""
    result = cli(*args)
    assert isinstance(result.exception, DrivelabError), (args, result.output, result.exception)
    message = str(result.exception)
    assert "\n" not in message, message
    return message


def _metrics_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------- provenance
def test_run_json_records_dataset_checksum_and_code_version(runs_root: Path, small_dataset: Path, tmp_path: Path) -> None:
    info = RunFolder(runs_root / LINE / f"{LINE}_v1").read_status()
    prov = info["provenance"]
    store = DatasetStore.open(small_dataset)
    assert prov["dataset"]["path"] == str(small_dataset.resolve())
    assert prov["dataset"]["checksum"] == dataset_checksum(store)
    assert prov["dataset"]["episodes"] == len(store.episodes()) == 3
    assert prov["init_sources"] == []
    assert prov["code"]["drivelab"]  # package version; the git fields may be None outside a checkout
    # the checksum follows the content, not the location: a copy matches, a re-split copy does not
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_dataset, copy)
    assert dataset_checksum(DatasetStore.open(copy)) == prov["dataset"]["checksum"]
    moved = DatasetStore.open(copy)
    moved.assign_splits(val=[0], test=[])
    assert dataset_checksum(DatasetStore.open(copy)) != prov["dataset"]["checksum"]


# ---------------------------------------------------------------------------- runs
def test_runs_lists_versions_with_batches_and_best_val_loss(runs_root: Path) -> None:
    (line,) = scan_lines(runs_root)
    assert line.name == LINE and [v.name for v in line.versions] == [f"{LINE}_v{n}" for n in (1, 2, 3)]
    for version in line.versions:
        val = [(r["batch"], r["val/loss"]) for r in _metrics_rows(version.run.path) if "val/loss" in r]
        best = min(val, key=lambda bv: bv[1])
        assert version.best_val == (best[0], pytest.approx(best[1]))
        assert version.batches == 12 and version.status == "finished" and len(version.periods) == 1
    listed = cli_ok("runs", "--runs", str(runs_root))
    assert re.search(r"v1\s+finished\s+12\s+#1 ", listed), listed
    assert f"{line.versions[0].best_val[1]:.4g}@{line.versions[0].best_val[0]}" in listed
    missing = run_cli_here("runs", "nope", "--runs", str(runs_root))  # the real exit code and stderr
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    assert missing.stderr.strip().count("\n") == 0 and f"lines there: {LINE}" in missing.stderr


# ---------------------------------------------------------------------------- cards
def _data_images(html: str) -> list[Image.Image]:
    """Decode every <img> of a page; each must be an embedded PNG or GIF."""
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', html)
    images = []
    for src in sources:
        match = re.fullmatch(r"data:image/(png|gif);base64,([A-Za-z0-9+/=]+)", src)
        assert match, f"not an embedded PNG/GIF: {src[:60]}"
        image = Image.open(io.BytesIO(base64.b64decode(match.group(2))))
        image.load()
        assert image.format.lower() == match.group(1)
        images.append(image)
    return images


def test_card_shows_training_summary_curves_and_closed_loop_results(evaluated: Path, small_dataset: Path) -> None:
    cli_ok("card", str(evaluated), "--html")
    card = (evaluated / "card.md").read_text()
    assert card.startswith(f"# {LINE}_v1\n")
    period = json.loads((evaluated / "periods.json").read_text())[0]
    assert f"(batches {period['first_batch']}-{period['last_batch']}, not watched)" in card
    assert "Training batches (total): *12*" in card
    config = load_config(evaluated / "config.yaml")
    counts = summarize_config(config, history_signal_sizes={"speed": 1}, with_shapes=False).counts
    assert f"Total params: `{counts.total:,}`" in card and f"Trainable params: `{counts.trainable:,}`" in card
    assert "Tiny run for the report tests." in card  # notes from the config
    assert "Trained from scratch" in card and "None of the layers has been frozen." in card
    # validation table: the last val/loss row of metrics.jsonl
    last_val = [r for r in _metrics_rows(evaluated) if "val/loss" in r][-1]
    assert f"| `val/loss` | {last_val['val/loss']:.4g} (batch {last_val['batch']}) |" in card
    # closed loop: the saved evaluation's numbers, policy and expert rows, and the GIF
    (saved,) = sorted((evaluated / "eval").glob("closed_loop_*.json"))
    record = json.loads(saved.read_text())
    policy = next(d for d in record["drivers"] if d["driver"] != "expert")
    expert = next(d for d in record["drivers"] if d["driver"] == "expert")
    assert f"| {policy['driver']} | {policy['aggregate']['score_mean']:.3f}±" in card
    assert f"| expert | {expert['aggregate']['score_mean']:.3f}±" in card
    for picture in ("architecture.png", "losses.png", "driving.gif"):
        assert f"(card/{picture})" in card or f'src="card/{picture}"' in card
        assert (evaluated / "card" / picture).stat().st_size > 0
    with Image.open(evaluated / "card" / "driving.gif") as gif:
        assert gif.n_frames > 1
    html = (evaluated / "card.html").read_text()
    images = _data_images(html)
    assert len(images) == 3 and {i.format for i in images} == {"PNG", "GIF"}
    assert "<table>" in html and 'src="card/' not in html  # nothing outside the page is needed


@pytest.mark.skipif(not HAS_FREEZE, reason="this config schema has no model.freeze")
def test_card_counts_frozen_parts_as_non_trainable(runs_root: Path) -> None:
    run = runs_root / LINE / f"{LINE}_v2"
    cli_ok("card", f"{LINE}_v2", "--runs", str(runs_root))
    card = (run / "card.md").read_text()
    config = load_config(run / "config.yaml")
    summary = summarize_config(config, history_signal_sizes={"speed": 1}, with_shapes=False)
    backbone = summary.parts["backbone"]
    assert backbone.frozen > 0 and summary.counts.frozen == backbone.frozen
    assert f"Non-trainable params: `{summary.counts.non_trainable:,}` (frozen {backbone.frozen:,}" in card
    assert f"Trainable params: `{summary.counts.total - summary.counts.non_trainable:,}`" in card
    assert "Frozen: `backbone.*` for the whole training." in card
    assert "Not evaluated yet" in card


@pytest.mark.skipif(not HAS_INIT_FROM, reason="this config schema has no model.init_from")
def test_card_names_transfer_sources_and_what_they_copied(runs_root: Path) -> None:
    run = runs_root / LINE / f"{LINE}_v3"
    cli_ok("card", str(run))
    card = (run / "card.md").read_text()
    report = json.loads((run / "init_report.json").read_text())
    (source,) = report["sources"]
    assert source["copied"] and all(name.startswith("backbone.") for name in source["copied"])
    assert (f"`{LINE}/{LINE}_v1@6`: modules `backbone.*`; copied {len(source['copied'])} tensors "
            f"({source['copied_values']:,} values)") in card
    assert f"newly initialised: {report['counts']['fresh_tensors']} tensors" in card
    assert f"init {LINE}_v1@6]" in card  # the backbone box of the diagram
    assert f"init sources: `{LINE}/{LINE}_v1@6`" in card  # provenance in run.json
    assert "Trained from scratch" not in card


def test_line_page_lists_every_version(runs_root: Path) -> None:
    cli_ok("card", LINE, "--runs", str(runs_root), "--html")
    page = (runs_root / LINE / "index.md").read_text()
    assert page.startswith(f"# {LINE}\n") and "## List of the models:" in page
    for version in (1, 2, 3):
        name = f"{LINE}_v{version}"
        assert f"- [`{name}`]({name}/card.md)" in page
        assert (runs_root / LINE / name / "card.md").is_file()
    html = (runs_root / LINE / "index.html").read_text()
    assert f'href="{LINE}_v1/card.html"' in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no Chromium here (the check runs where it is installed)")
def test_card_html_renders_in_headless_chromium(evaluated: Path, tmp_path: Path) -> None:
    if not (evaluated / "card.html").is_file():
        cli_ok("card", str(evaluated), "--html")
    shot = tmp_path / "card.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_card_html.py"), str(evaluated / "card.html"),
         "--screenshot", str(shot), "--height", "1200"],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["images"] >= 2 and result["broken"] == [] and result["external"] == []
    assert all(width > 0 and height > 0 for _, width, height in result["sizes"])
    with Image.open(shot) as image:
        assert image.size == (1200, 1200)
        assert np.asarray(image.convert("L")).std() > 5  # something was drawn, not a blank page


def test_driving_gif_is_shrunk_to_its_budget_keeping_the_whole_episode(tmp_path: Path) -> None:
    from drivelab.reports.figures import shrink_gif

    rng = np.random.default_rng(0)  # noise does not compress: the budget forces real shrinking
    frames = [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(60)]
    source = tmp_path / "lap.gif"
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=40, loop=0)
    assert source.stat().st_size > 300_000
    small = shrink_gif(source, tmp_path / "small.gif", max_bytes=100_000)
    assert small.stat().st_size <= 100_000
    with Image.open(small) as gif:
        kept, duration = gif.n_frames, gif.info["duration"]
    assert 1 < kept < 60
    assert kept * duration == pytest.approx(60 * 40, rel=0.15)  # same playing time, fewer frames


# ---------------------------------------------------------------------------- compare
def _raw_keras_scalars(tag: str) -> dict[int, float]:
    """The fixture's tensor summaries for ``tag``, decoded straight from the event records."""
    (file,) = CHARLES.iterdir()
    found = {}
    for event in EventFileLoader(str(file)).Load():
        for value in event.summary.value:
            if value.tag == tag and value.HasField("tensor"):
                found[event.step] = float(tensor_util.make_ndarray(value.tensor))
    return found


@pytest.mark.skipif(not CHARLES.is_dir(), reason="Charles fixture not available")
def test_keras_tensor_summaries_are_read_as_scalars() -> None:
    series = read_tensorboard(CHARLES)
    assert {"loss", "ModelOutputs.steering_loss", "ModelOutputs.steering_mean_absolute_error"} <= set(series)
    assert "keras" not in series  # the model-config text summary is not a curve
    for tag in ("loss", "ModelOutputs.steering_loss", "ModelOutputs.acceleration_braking_loss"):
        raw = _raw_keras_scalars(tag)
        assert len(raw) > 1
        assert series[tag].steps.tolist() == sorted(raw)
        assert series[tag].values.tolist() == pytest.approx([raw[s] for s in sorted(raw)])
    assert find_tag(series, "steering_loss", "charles").tag == "ModelOutputs.steering_loss"


@pytest.mark.skipif(not CHARLES.is_dir(), reason="Charles fixture not available")
def test_compare_draws_runs_and_a_keras_log(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp.png"
    shown = cli_ok("compare", f"{LINE}_v1", f"{LINE}_v2", str(CHARLES), "--runs", str(runs_root),
                   "--tags", "loss,steering_loss", "--legend", "v1,v2,charles", "--smooth", "0.5", "--out", str(out))
    for tag in ("loss", "steering_loss"):
        with Image.open(tmp_path / f"cmp_{tag}.png") as image:
            assert image.format == "PNG" and image.size[0] > 300
    charles_points = len(_raw_keras_scalars("ModelOutputs.steering_loss"))
    assert f"charles {charles_points} points (ModelOutputs.steering_loss)" in shown
    logged = [r["batch"] for r in _metrics_rows(runs_root / LINE / f"{LINE}_v1") if "steering_loss" in r]
    assert f"v1 {len(set(logged))} points (steering_loss)" in shown
    cli_ok("compare", f"{LINE}_v1", f"{LINE}_v2", "--runs", str(runs_root), "--tags",
           "loss,val/loss", "--panels", "--out", str(tmp_path / "panels.png"))
    assert (tmp_path / "panels.png").is_file() and not (tmp_path / "panels_loss.png").exists()


def test_subsample_cut_end_and_smoothing() -> None:
    steps = np.arange(0, 100, 10)
    series = Series("loss", steps, np.array([5.0, 4, np.nan, 3, 2, 2, 1, 1, 1, 1]))
    cut = prepare(series, CompareOptions(tags=("loss",), subsample=2, cut_end=60))
    assert cut.steps.tolist() == [0, 30, 50]  # NaN point dropped, then every 2nd up to step 60
    assert cut.values.tolist() == [5.0, 3.0, 2.0]
    flat = ema(np.full(6, 3.0), 0.9)
    assert flat == pytest.approx(np.full(6, 3.0))  # debiased: no ramp from zero
    smoothed = ema(np.array([0.0, 10.0]), 0.5)
    assert smoothed.tolist() == pytest.approx([0.0, 10.0 * 0.5 / 0.75])


def test_pytorch_logs_in_subfolders_get_prefixed_tags(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    for part, values in (("train", [3.0, 2.0, 1.0]), ("validation", [3.5, 2.5])):
        with SummaryWriter(str(tmp_path / "logs" / part)) as writer:
            for step, value in enumerate(values):
                writer.add_scalar("epoch_loss", value, step)
    source = resolve_source(tmp_path / "logs")
    series = source.read()
    assert series["train/epoch_loss"].values.tolist() == [3.0, 2.0, 1.0]
    assert series["validation/epoch_loss"].steps.tolist() == [0, 1]
    with pytest.raises(ReportError, match=r"ambiguous.*train/epoch_loss, validation/epoch_loss"):
        find_tag(series, "epoch_loss", "logs")
    curves = collect_curves([source], CompareOptions(tags=("validation/epoch_loss",)))
    assert curves["validation/epoch_loss"][0][1].values.tolist() == [3.5, 2.5]


# ---------------------------------------------------------------------------- bad input
def test_bad_input_is_one_clear_line(runs_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (("compare", str(tmp_path / "missing"), "--tags", "loss"), "does not exist"),
        (("compare", str(empty), "--tags", "loss"), "no TensorBoard event files"),
        (("compare", f"{LINE}_v1", "--runs", str(runs_root), "--tags", "nope"), "available tags: "),
        (("compare", f"{LINE}_v1", f"{LINE}_v2", "--runs", str(runs_root), "--legend", "a"), "one per source"),
        (("compare", f"{LINE}_v1", "--runs", str(runs_root), "--out", str(tmp_path / "x.jpg")), ".png"),
        (("card", f"{LINE}_v9", "--runs", str(runs_root)), "does not exist"),
        (("runs", "--runs", str(tmp_path / "nowhere")), "does not exist"),
    ]
    if CHARLES.is_dir():
        cases.append((("card", str(CHARLES)), "not a drivelab run"))
    for args, message in cases:
        assert message in cli_error(*args), args
    assert "steering_loss" in cli_error("compare", f"{LINE}_v1", "--runs", str(runs_root), "--tags", "nope")
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "x.jpg").exists()


def test_compare_legends_are_unique_for_same_named_runs(tmp_path: Path) -> None:
    """Two runs of one name (in two runs roots) get two legend entries, never one twice."""
    from drivelab.reports.compare import _unique_labels
    from drivelab.reports.events import Source

    same = [Source(tmp_path / root / "line" / "line_v1", "run", "line_v1") for root in ("runs_a", "runs_b")]
    assert _unique_labels(same) == ["runs_a/line/line_v1", "runs_b/line/line_v1"]
    twice = [same[0], same[0]]
    labels = _unique_labels(twice)
    assert len(set(labels)) == 2 and labels[1].endswith("#2")
    other = Source(tmp_path / "x" / "other_v1", "run", "other_v1")
    assert _unique_labels([same[0], other]) == ["line_v1", "other_v1"]  # unique names stay short


def test_balance_panels_share_one_y_scale_per_output(tmp_path: Path) -> None:
    """Before and after are compared bar by bar: one y-scale per output row, labelled axes."""
    import matplotlib.pyplot as plt

    from drivelab.order import report as balance_report

    report = {"scheme": "inverse_frequency", "frames_before": 100, "frames_kept": 100,
              "effective_sample_size": 80.0,
              "outputs": {"steering": {"bins": ["l", "c", "r"], "counts_before": [10, 80, 10],
                                       "counts_after": [33, 34, 33], "entropy_before": 0.9,
                                       "entropy_after": 1.58}}}
    figures = []
    original = plt.close
    plt.close = figures.append  # keep the figure to look at it
    try:
        balance_report.plot_balance(report, tmp_path / "balance.png")
    finally:
        plt.close = original
    (figure,) = figures
    before, after = figure.axes
    assert before.get_ylim() == after.get_ylim() and before.get_ylim()[1] >= 80
    assert before.get_ylabel() and after.get_ylabel() and before.get_xlabel() == "steering bin"
    original(figure)
