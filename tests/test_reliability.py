"""User mistakes and damaged files: one `error:` line, a non-zero exit, nothing lost (issue 12).

Every case uses real files and real damage: real datasets and runs made here, truncated or
garbage checkpoints, a real full file system (a tiny tmpfs), a real Ctrl-C (SIGINT to the
process group). Each test names the case it covers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import PILOTNET, quick, run_cli, run_cli_here
from drivelab.config import load_config
from drivelab.data.store import DatasetStore
from drivelab.outputs import OutputError, check_output, write_generated, write_text
from drivelab.runs.checkpoints import (
    CheckpointError,
    list_checkpoints,
    load_trainer_state,
    load_weights,
    state_path,
    weights_path,
)
from drivelab.runs.folder import RunFolder
from drivelab.train import train

CONFIG = PILOTNET
ENV = {**os.environ, "SDL_VIDEODRIVER": "dummy", "COLUMNS": "160"}


def tiny(dataset: Path, *extra: str) -> list[str]:
    return quick(
        dataset,
        "train.log_every=2",
        "train.val_every=100",
        *extra,
        batch_size=16,
    )


def one_error_line(r: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """The user-mistake contract: exit code, no traceback, the last line is the error."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines, r.stdout
    for needle in needles:
        assert needle in r.stderr, r.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def trained(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """A tiny run with checkpoints at batches 2, 4 and 6 (never modified: tests copy it)."""
    runs = tmp_path_factory.mktemp("runs")
    cfg = load_config(CONFIG, tiny(small_dataset, "train.max_batches=6", "train.checkpoint_every=2"))
    return train(cfg, runs_root=runs).run


def copy_run(run: RunFolder, tmp_path: Path) -> RunFolder:
    target = tmp_path / "runs" / run.line / run.name
    shutil.copytree(run.path, target)
    (target / ".train.lock").unlink(missing_ok=True)
    return RunFolder(target)


# ---------------------------------------------------------------------------- 1, 9: output files
def test_json_into_a_dataset_is_refused_and_the_dataset_still_opens(small_dataset: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "ds.zarr"
    shutil.copytree(small_dataset, dataset)
    before = (dataset / "zarr.json").read_bytes()
    r = run_cli_here("data", "balance", str(dataset), "--scheme", "v1", "--skip-empty", "--json", str(dataset / "zarr.json"))
    assert "dataset" in one_error_line(r)
    assert (dataset / "zarr.json").read_bytes() == before
    DatasetStore.open(dataset)
    # also a new file anywhere inside the dataset
    r = run_cli_here("data", "balance", str(dataset), "--json", str(dataset / "episodes" / "report.json"))
    one_error_line(r, "inside the drivelab dataset")
    assert not (dataset / "episodes" / "report.json").exists()


def test_existing_output_needs_force_and_is_replaced_atomically(small_dataset: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text("precious")
    r = run_cli_here("data", "balance", str(small_dataset), "--json", str(report))
    one_error_line(r, "already exists", "--force")
    assert report.read_text() == "precious"
    r = run_cli_here("data", "balance", str(small_dataset), "--json", str(report), "--force")
    assert r.returncode == 0, r.stderr
    assert json.loads(report.read_text())["scheme"] == "none"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_outputs_inside_a_runs_bookkeeping_are_refused(trained: RunFolder, tmp_path: Path) -> None:
    for name in ("run.json", "config.yaml", "periods.json", "metrics.jsonl", "checkpoints/x.json"):
        with pytest.raises(OutputError, match="part of the run"):
            check_output(trained.path / name, "--json", force=True)
    check_output(trained.path / "notes.json", "--json")  # a new file of the user's own is fine


@pytest.mark.parametrize(("verb", "flag", "name"), [
    (("data", "info"), "--plot", "x.json"),
    (("data", "balance"), "--plot", "out.txt"),
])
def test_plot_with_a_wrong_suffix_is_one_line(small_dataset: Path, tmp_path: Path, verb: tuple[str, ...],
                                              flag: str, name: str) -> None:
    r = run_cli_here(*verb, str(small_dataset), flag, str(tmp_path / name))
    one_error_line(r, ".png")
    assert not (tmp_path / name).exists()


def test_a_parent_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = run_cli_here("demo", "--out", str(afile / "sub"), "--episodes", "3")
    one_error_line(r, "is a file")
    r = run_cli_here("data", "synth-signs", "--out", str(afile / "signs"))
    one_error_line(r, "is a file")
    r = run_cli_here("train", str(CONFIG), "data.path=/nonexistent", "--runs", str(afile))  # found beyond the list
    one_error_line(r, "--runs", "is a file")
    assert afile.read_text() == "x"


def test_eval_video_problems_are_found_before_driving(tmp_path: Path) -> None:
    afile = tmp_path / "video.gif"
    afile.write_text("not a folder")
    started = time.monotonic()
    r = run_cli_here("eval", "--baseline", "expert", "--episodes", "1", "--video", str(afile))
    one_error_line(r, "is a file")
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "expert_track10000.mp4").write_text("an earlier video")
    r = run_cli_here("eval", "--baseline", "expert", "--episodes", "1", "--video", str(folder))
    one_error_line(r, "expert_track10000.mp4 already exists")
    assert time.monotonic() - started < 60  # refused up front, not after driving a track
    assert (folder / "expert_track10000.mp4").read_text() == "an earlier video"


def test_generated_reports_are_regenerated_but_user_files_are_not(tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    write_generated(card, "# first")
    write_generated(card, "# second")  # ours, unchanged since: replaced
    assert card.read_text() == "# second"
    card.write_text("# edited by hand")
    with pytest.raises(OutputError, match=r"already exists.*--force"):
        write_generated(card, "# third")
    assert card.read_text() == "# edited by hand"
    write_generated(card, "# third", force=True)
    assert card.read_text() == "# third"
    with pytest.raises(OutputError, match="already exists"):
        write_text(card, "plain writes never replace")


def test_card_refuses_a_hand_written_card_without_force(trained: RunFolder, tmp_path: Path) -> None:
    run = copy_run(trained, tmp_path)
    r = run_cli_here("card", str(run.path))
    assert r.returncode == 0, r.stderr
    r = run_cli_here("card", str(run.path))  # regenerating its own card is fine
    assert r.returncode == 0, r.stderr
    (run.path / "card.md").write_text("my own notes")
    one_error_line(run_cli_here("card", str(run.path)), "--force")
    assert (run.path / "card.md").read_text() == "my own notes"
    assert run_cli_here("card", str(run.path), "--force").returncode == 0


def test_compare_refuses_to_replace_a_figure(trained: RunFolder, tmp_path: Path) -> None:
    figure = tmp_path / "cmp.png"
    figure.write_bytes(b"old")
    one_error_line(run_cli_here("compare", str(trained.path), "--out", str(figure)), "already exists")
    assert figure.read_bytes() == b"old"
    assert run_cli_here("compare", str(trained.path), "--out", str(figure), "--force").returncode == 0
    assert figure.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------- 6: damaged checkpoints
@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "lying-header"])
def test_damaged_weights_are_one_line_in_eval_and_init_from(trained: RunFolder, tmp_path: Path, damage: str) -> None:
    run = copy_run(trained, tmp_path)
    weights = weights_path(run.checkpoints, 6)
    data = weights.read_bytes()
    weights.write_bytes({
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "garbage": os.urandom(4096),
        "lying-header": (10**12).to_bytes(8, "little") + data[8:],
    }[damage])
    with pytest.raises(CheckpointError, match="damaged"):
        load_weights(weights)
    r = run_cli_here("eval", f"{run.path}@6", "--offline", "val")
    one_error_line(r, "batch_6.safetensors")


def test_garbage_trainer_state_never_suggests_weights_only_false(trained: RunFolder, tmp_path: Path) -> None:
    run = copy_run(trained, tmp_path)
    state = state_path(run.checkpoints, 6)
    for payload in (b"\x80\x04garbage-pickle", state.read_bytes()[:100]):
        state.write_bytes(payload)
        with pytest.raises(CheckpointError) as caught:
            load_trainer_state(run.checkpoints, 6)
        assert "weights_only" not in str(caught.value) and "Errno 22" not in str(caught.value)


def test_resume_names_the_damaged_checkpoint_and_resumes_from_the_offered_one(
    small_dataset: Path, trained: RunFolder, tmp_path: Path
) -> None:
    run = copy_run(trained, tmp_path)
    weights = weights_path(run.checkpoints, 6)
    weights.write_bytes(weights.read_bytes()[:300])  # a disk that filled up mid-write
    r = run_cli("train", "--resume", str(run.path), "--no-progress")
    last = one_error_line(r, "batch 6", "damaged", f"--resume {run.path}@4")
    assert "weights_only" not in last
    assert list_checkpoints(run.checkpoints) == [2, 4, 6]  # nothing deleted by the refusal
    r = run_cli("train", "--resume", f"{run.path}@4", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert list_checkpoints(run.checkpoints) == [2, 4, 6]  # 6 rewritten by the resumed period
    assert (run.checkpoints / "damaged" / "batch_6.safetensors").is_file()  # kept aside
    # the resumed batch 6 equals the intact original's, bit for bit
    original = load_weights(weights_path(trained.checkpoints, 6))
    again = load_weights(weights_path(run.checkpoints, 6))
    assert all(torch.equal(original[k], again[k]) for k in original)
    # an intact later checkpoint is never skipped
    one_error_line(run_cli_here("train", "--resume", f"{run.path}@2", "--no-progress"), "intact checkpoint after batch 2")


# ---------------------------------------------------------------------------- 12: disk full
@pytest.fixture
def small_fs(tmp_path: Path, trained: RunFolder):
    """A real file system with room for about three checkpoints of the tiny run (a tmpfs;
    needs root, skipped where mounting is impossible)."""
    one = weights_path(trained.checkpoints, 2).stat().st_size + state_path(trained.checkpoints, 2).stat().st_size
    mount = tmp_path / "fs"
    mount.mkdir()
    size_kib = int((3.5 * one + 256 * 1024) / 1024)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_while_training_keeps_the_last_checkpoint_and_resumes(small_dataset: Path, small_fs: Path) -> None:
    runs = small_fs / "runs"
    overrides = tiny(small_dataset, "train.max_batches=12", "train.checkpoint_every=1", "train.log_every=1")
    r = run_cli("train", str(CONFIG), *overrides, "--runs", str(runs), "--no-progress")
    last = one_error_line(r, "no space left")
    (run_dir,) = list(runs.glob("*/*_v1"))
    kept = list_checkpoints(run_dir / "checkpoints")
    assert kept and f"checkpoint batch {kept[-1]} is kept" in last
    assert "--resume" in last
    load_weights(weights_path(run_dir / "checkpoints", kept[-1]))  # the kept one is whole
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))  # no half-written file left
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_fs)], check=True)
    r = run_cli("train", "--resume", str(run_dir), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert list_checkpoints(run_dir / "checkpoints")[-1] == 12


# ---------------------------------------------------------------------------- 13: empty periods.json
def test_empty_periods_json_is_unknown_for_runs_and_card(trained: RunFolder, tmp_path: Path) -> None:
    run = copy_run(trained, tmp_path)
    run.periods_path.write_text("")
    r = run_cli_here("runs", "--runs", str(tmp_path / "runs"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    r = run_cli_here("card", str(run.path))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert run.read_periods() == []


# ---------------------------------------------------------------------------- 8, 10: configs
def test_a_huge_input_size_is_refused_with_the_figure(small_dataset: Path) -> None:
    r = run_cli_here("summary", str(CONFIG), "data.input_size=[100000,100000]")
    one_error_line(r, "TiB", "data.input_size")


@pytest.mark.parametrize("payload", [b"\xff\xfel\x00i\x00n\x00e\x00", b"\x00\x01\x02binary\x00", b"\x89PNG\r\n\x1a\n\x00"])
def test_binary_or_utf16_config_is_one_line(tmp_path: Path, payload: bytes) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(payload)
    one_error_line(run_cli_here("train", str(config)), str(config))


# ---------------------------------------------------------------------------- 15: Ctrl-C
def _as_from_a_terminal() -> None:
    """The child starts as a shell starts it: SIGINT delivered and handled by default, whatever
    the test process inherited or changed (a Ctrl-C test must not depend on the tests before)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sigint_state(pid: int) -> str:
    """SigBlk/SigIgn of a process, for the failure message."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "gone"
    return " ".join(ln for ln in lines if ln.startswith(("SigBlk", "SigIgn", "State")))


def _interrupt_when(cmd: list[str], ready, timeout: float = 180) -> subprocess.CompletedProcess:
    """Start ``cmd`` in its own process group, SIGINT the group (as a terminal's Ctrl-C does)."""
    proc = subprocess.Popen([sys.executable, "-m", "drivelab.cli", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True,
                            preexec_fn=_as_from_a_terminal)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.05)
        state = _sigint_state(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit 120 s after SIGINT ({state}; now {_sigint_state(proc.pid)})") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    done.signals = state  # type: ignore[attr-defined]  (for the failure message)
    return done


def _clean_interrupt(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 130, (r.returncode, r.stderr, getattr(r, "signals", ""))
    for noise in ("Traceback", "SpawnProcess", "leaked semaphore", "KeyboardInterrupt"):
        assert noise not in r.stderr, r.stderr
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("interrupted:"), r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def test_ctrl_c_in_collect_says_what_was_committed(tmp_path: Path) -> None:
    out = tmp_path / "d.zarr"

    def one_committed() -> bool:
        return (out / "zarr.json").exists() and len(DatasetStore.open(out).episodes()) >= 1

    r = _interrupt_when(["collect", "--episodes", "8", "--workers", "2", "--max-steps", "120", "--out", str(out)],
                        one_committed)
    _clean_interrupt(r, "episodes committed", "--append")
    assert run_cli_here("data", "verify", str(out)).returncode == 0


def test_ctrl_c_in_train_names_the_kept_checkpoint(small_dataset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    overrides = tiny(small_dataset, "train.max_batches=5000", "train.checkpoint_every=2")
    run = runs / "carracing_pilotnet" / "carracing_pilotnet_v1"
    r = _interrupt_when(["train", str(CONFIG), *overrides, "--runs", str(runs), "--no-progress"],
                        lambda: bool(list_checkpoints(run / "checkpoints")))
    _clean_interrupt(r, "kept in", f"--resume {run}")


# ---------------------------------------------------------------------------- 18: wording, offline timm
def test_demo_flags_are_named_as_typed(tmp_path: Path) -> None:
    last = one_error_line(run_cli_here("demo", "--out", str(tmp_path / "d"), "--batches", "-3"))
    assert "--batches" in last and "train.max_batches" not in last
    assert not (tmp_path / "d").exists()


def test_offline_timm_init_fails_fast(small_dataset: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "drivelab.cli", "train", str(CONFIG), *tiny(small_dataset, "train.max_batches=2"),
         "model.backbone.name=resnet18", "model.init_from=[{source: 'timm:resnet18.a1_in1k'}]",
         "--runs", str(tmp_path / "runs"), "--no-progress"],
        capture_output=True, text=True, env={**ENV, "HF_HUB_OFFLINE": "1"}, timeout=120,
    )
    one_error_line(r, "timm")
    assert r.stderr.count("\n") <= 3, r.stderr  # no retry chatter
    assert time.monotonic() - started < 40
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/*"))


