"""Issue 29, the command line's share: YAML alias bombs, usage errors, markup in user values,
negative seeds, `specs` memory, and a damaged checkpoint asked for by ``--resume RUN@N``.

Every case is a real file (a bomb of ~400 bytes, a config, a trained run's checkpoints) fed to
the real `drivelab` command; a user mistake must end in one plain ``error:`` line, exit 2, with
nothing created.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PILOTNET, quick, run_cli, run_cli_here
from drivelab.config import ConfigError, load_config
from drivelab.config.yaml_text import ALIAS_BUDGET, parse_yaml
from drivelab.runs.checkpoints import list_checkpoints, state_path
from drivelab.runs.folder import RunFolder
from drivelab.train import train

#: A bomb that expands a (usual) hang into seconds: the command must answer well before this.
BOMB_TIMEOUT_S = 120


def one_error_line(r: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """The user-mistake contract: exit code, no traceback, no panel, exactly one stderr line."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def laughs(levels: int, width: int = 9) -> str:
    """A flow list of anchors, each listing the previous one ``width`` times ("billion laughs"):
    ``levels`` = 9 is a ~400-byte value standing for 9**9 (387 million) strings."""
    items = [f"&a [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        previous, anchor = chr(ord("a") + level - 1), chr(ord("a") + level)
        items.append(f"&{anchor} [{', '.join([f'*{previous}'] * width)}]")
    return f"[{', '.join(items)}]"


# ---------------------------------------------------------------------------- 4: alias bombs
def test_an_alias_bomb_config_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(f"line: bomb\nnotes: {laughs(9)}\n")
    assert config.stat().st_size < 500
    runs = tmp_path / "runs"
    r = run_cli("train", str(config), "--runs", str(runs), cwd=tmp_path, timeout=BOMB_TIMEOUT_S)
    one_error_line(r, str(config), "aliases", "refused")
    assert not runs.exists()


def test_an_alias_bomb_sweep_spec_is_one_line_before_any_folder(tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"name: bomb\nbase: {PILOTNET}\ngrid:\n  train.lr: {laughs(9)}\nseeds: 1\n")
    out = tmp_path / "out"
    r = run_cli("sweep", str(spec), "--out", str(out), cwd=tmp_path, timeout=BOMB_TIMEOUT_S)
    one_error_line(r, str(spec), "aliases")
    assert not out.exists()


def test_an_alias_bomb_in_a_sweeps_base_config_or_an_override_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(PILOTNET.read_text() + f"\nnotes: {laughs(6)}\n")  # 531441 values: over budget
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"name: bomb\nbase: {base}\ngrid:\n  train.lr: [0.1, 0.01]\nseeds: 1\n")
    out = tmp_path / "out"
    one_error_line(run_cli_here("sweep", str(spec), "--out", str(out)), "base config", str(base), "aliases")
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"override notes=.*aliases"):
        load_config(PILOTNET, [f"notes={laughs(6)}"])


def test_small_anchors_still_work_and_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    assert parse_yaml("a: &x [1, 2]\nb: *x\n", "t.yaml") == {"a": [1, 2], "b": [1, 2]}
    config = tmp_path / "anchored.yaml"  # both heads share one anchored width list
    text = PILOTNET.read_text().replace("widths: [50, 10]", "widths: &widths [50, 10]", 1)
    config.write_text(text.replace("widths: [50, 10]", "widths: *widths"))
    assert [h.widths for h in load_config(config).model.heads] == [[50, 10], [50, 10]]
    # the budget is on what aliases add: just under it loads, just over it is refused
    under = "[&a [" + ", ".join(["1"] * 99) + "], " + ", ".join(["*a"] * (ALIAS_BUDGET // 100)) + "]"
    assert len(parse_yaml(under, "under.yaml")) == ALIAS_BUDGET // 100 + 1
    over = under[:-1] + ", *a, *a]"
    with pytest.raises(ConfigError, match=r"over\.yaml: YAML aliases"):
        parse_yaml(over, "over.yaml")
    with pytest.raises(ConfigError, match="line 1: a YAML alias refers to the value that contains it"):
        parse_yaml("a: &a [1, *a]\n", "loop.yaml")
    deep = tmp_path / "deep.yaml"
    deep.write_text("notes: " + "[" * 20000 + "]" * 20000 + "\n")
    one_error_line(run_cli_here("summary", str(deep)), str(deep), "nested too deeply")


@pytest.mark.parametrize(("override", "key"), [
    (f"notes=[{', '.join(map(str, range(20000)))}]", "notes"),
    ("train.lr=" + "x" * 20000, "train.lr"),
    ("model.backbone.pretrained=" + "y" * 20000 + ".bin", "model.backbone.pretrained"),
])
def test_a_huge_value_is_shown_cut_short(override: str, key: str) -> None:
    line = one_error_line(run_cli_here("summary", str(PILOTNET), override), key)
    assert len(line) < 500, len(line)


# ---------------------------------------------------------------------------- 26: usage errors
@pytest.mark.parametrize(("args", "verb", "needle"), [
    (("train", "--bogus", "x"), "drivelab train", "--bogus"),
    (("data", "info", "--plot"), "drivelab data info", "--plot"),  # Click's error names no verb
    (("collect", "--episodes", "abc"), "drivelab collect", "--episodes"),
    (("runs", "a", "b", "c"), "drivelab runs", "unexpected extra argument"),
    (("nosuchverb",), "drivelab", "nosuchverb"),
    (("data", "nosuch"), "drivelab data", "nosuch"),
    (("collect", "--episodes", "9" * 5000 + "x"), "drivelab collect", "--episodes"),
])
def test_usage_errors_are_one_plain_line(args: tuple[str, ...], verb: str, needle: str) -> None:
    r = run_cli_here(*args)
    line = one_error_line(r, needle, f"(see {verb} --help)")
    assert "╭" not in r.stderr and "Usage:" not in r.stderr and len(line) < 500


def test_help_still_works_and_no_arguments_still_shows_it() -> None:
    r = run_cli_here("train", "--help")
    assert r.returncode == 0 and "Usage: drivelab train" in r.stdout and not r.stderr.strip(), r.stderr
    r = run_cli_here()
    assert r.returncode == 2 and "Usage: drivelab" in r.stdout and "error" not in r.stderr


# ---------------------------------------------------------------------------- 22: no markup
def test_a_user_path_prints_as_typed_not_as_markup_or_emoji(tmp_path: Path) -> None:
    odd = tmp_path / "[red]:x:[/red] [bold]"
    config = odd / "c.yaml"
    line = one_error_line(run_cli_here("train", str(config)))
    assert str(config) in line  # `[red]` not swallowed, `:x:` not an emoji
    assert "❌" not in line
    odd.mkdir(parents=True)
    r = run_cli_here("runs", "--runs", str(odd))
    assert r.returncode == 0, r.stderr
    assert str(odd) in r.stdout and "❌" not in r.stdout


def test_data_info_and_verify_print_a_dataset_path_as_typed(small_dataset: Path, tmp_path: Path) -> None:
    dataset = tmp_path / ":x: [blink]" / "ds.zarr"
    shutil.copytree(small_dataset, dataset)
    r = run_cli_here("data", "info", str(dataset))
    assert r.returncode == 0, r.stderr
    assert ":x: [blink]" in r.stdout and "❌" not in r.stdout
    r = run_cli_here("data", "verify", str(dataset))
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


# ---------------------------------------------------------------------------- 13: seeds
@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_an_out_of_range_seed_is_one_line_and_leaves_no_run_folder(small_dataset: Path, tmp_path: Path,
                                                                     seed: str) -> None:
    runs = tmp_path / "runs"
    r = run_cli_here("train", str(PILOTNET), *quick(small_dataset, "train.max_batches=2"), f"seed={seed}",
                     "--runs", str(runs), "--no-progress")
    one_error_line(r, "seed", seed)
    assert not runs.exists() or not any(runs.rglob("*")), list(runs.rglob("*"))
    assert load_config(PILOTNET, [f"seed={2**32 - 1}"]).seed == 2**32 - 1  # numpy's largest


# ---------------------------------------------------------------------------- 19: specs memory
@pytest.mark.parametrize("flags", [("--input-size", "100000", "100000"), ("--batch", "1000000000")])
def test_specs_refuses_a_plan_beyond_memory_before_measuring(flags: tuple[str, ...]) -> None:
    r = run_cli_here("specs", "tiny", *flags)
    one_error_line(r, "needs about", "TiB", flags[0], "is available")
    assert "measured" not in r.stderr


def test_specs_memory_estimate_counts_the_weights_of_a_flattening_backbone() -> None:
    from drivelab.errors import DrivelabError
    from drivelab.models.specs import SpecsPlan, check_specs_memory

    plan = SpecsPlan(input_size=(512, 512), batch=1)
    check_specs_memory([("tiny", "tiny")], plan, available=2**40)  # fits: no error
    with pytest.raises(DrivelabError, match="weights"):  # frames fit, the dense layer does not
        check_specs_memory([("tiny", "tiny")], plan, available=200 * 2**20)


# ---------------------------------------------------------------------------- 25: resume @N
@pytest.fixture(scope="module")
def trained(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """A tiny run with checkpoints at batches 2, 4 and 6 (never modified: tests copy it)."""
    runs = tmp_path_factory.mktemp("runs")
    config = load_config(PILOTNET, quick(small_dataset, "train.max_batches=6", "train.checkpoint_every=2",
                                         "train.log_every=2", "train.val_every=100"))
    return train(config, runs_root=runs).run


def test_a_damaged_checkpoint_asked_for_names_the_intact_later_ones(trained: RunFolder,
                                                                      tmp_path: Path) -> None:
    target = tmp_path / "runs" / trained.line / trained.name
    shutil.copytree(trained.path, target)
    (target / ".train.lock").unlink(missing_ok=True)
    run = RunFolder(target)
    state_path(run.checkpoints, 2).write_bytes(b"\x80\x04garbage")
    r = run_cli_here("train", "--resume", f"{run.path}@2", "--no-progress")
    line = one_error_line(r, "batch 2", "damaged", "batches 4, 6", f"`--resume {run.path}`")
    assert "no intact checkpoint" not in line
    state_path(run.checkpoints, 6).write_bytes(b"")  # the newest one damaged too
    r = run_cli_here("train", "--resume", f"{run.path}@2", "--no-progress")
    one_error_line(r, "batch 2", "damaged", "batch 4", f"`--resume {run.path}@4`")
    assert list_checkpoints(run.checkpoints) == [2, 4, 6]  # the refusals moved nothing


def test_a_path_with_a_line_break_or_too_long_for_the_file_system_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(run_cli_here("runs", "--runs", str(tmp_path / "a\nb")), "a\\nb")
    assert str(tmp_path) in line
    for args in (("runs", "--runs"), ("train",), ("data", "info")):
        line = one_error_line(run_cli_here(*args, str(tmp_path / ("x" * 5000))), "too long")
        assert len(line) < 300


def test_a_value_yaml_cannot_construct_is_one_line(tmp_path: Path) -> None:
    """`2001-02-30` looks like a date to YAML and its constructor raised a bare ValueError."""
    config = tmp_path / "dated.yaml"
    config.write_text(PILOTNET.read_text().replace("seed: 123", "seed: 123\nnotes: 2001-02-30"))
    one_error_line(run_cli_here("summary", str(config)), str(config), "quote it")
    one_error_line(run_cli_here("summary", str(PILOTNET), "notes=!!int x"), "override notes", "quote it")


def test_a_control_character_in_an_override_is_one_line() -> None:
    """YAML's reader refuses control characters while the loader is made (found by test_fuzz)."""
    from drivelab.config.loading import ConfigError, apply_overrides

    with pytest.raises(ConfigError, match="override seed="):
        apply_overrides({}, ["seed=\x1f"])
