"""Issue 30's owners: one dataset-creation path, one writer, one default env, the eval job.

Small generated data (a synthetic GTSRB set of 3 classes x 4 images), real stores and the real
command line; the source scans keep each "once" from drifting back into many places.
"""

from __future__ import annotations

import ast
import errno
import os
from pathlib import Path

import pytest

from conftest import run_cli_here
from drivelab.data.synth_signs import synthesize_signs

SRC = Path(__file__).resolve().parents[1] / "src" / "drivelab"


@pytest.fixture(scope="module")
def signs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("house") / "gtsrb"
    synthesize_signs(out, classes=3, per_class=4, seed=1, size=32)
    return out


def _one_line(result, *needles: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _fail_second_episode(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    """The second episode's write fails after the first was committed for real."""
    import drivelab.data.dataset_out as dataset_out

    real = dataset_out.write_episode

    def write(store, index, record):
        if index == 0:
            return real(store, index, record)
        raise exc

    monkeypatch.setattr(dataset_out, "write_episode", write)


@pytest.mark.parametrize("layout", ["gtsrb", "imagefolder"])
def test_image_importers_write_through_the_one_path_disk_full(
    signs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    """GTSRB and ImageFolder imports get the interop imports' crash safety: a full disk is one
    line (it was a traceback) and the half-written dataset is gone."""
    source = signs if layout == "gtsrb" else signs / "Final_Training" / "Images"
    _fail_second_episode(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    out = tmp_path / "out"
    result = run_cli_here("data", "import", layout, str(source), "--out", str(out))
    assert result.returncode == 2
    _one_line(result, "error:", "the disk is full", "nothing was written")
    assert not out.exists()


def test_image_import_ctrl_c_says_nothing_was_kept(signs: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during a GTSRB import: exit 130 and a line that says the partial set was removed
    (the generic line said "committed work is kept", which was not true)."""
    _fail_second_episode(monkeypatch, KeyboardInterrupt())
    out = tmp_path / "out"
    result = run_cli_here("data", "import", "gtsrb", str(signs), "--out", str(out))
    assert result.returncode == 130
    _one_line(result, "interrupted:", "nothing was written")
    assert not out.exists()


def test_image_import_refuses_an_out_inside_a_dataset(signs: Path, tmp_path: Path) -> None:
    """The one path's up-front check: an --out inside a drivelab dataset is refused."""
    first = tmp_path / "first"
    assert run_cli_here("data", "import", "gtsrb", str(signs), "--out", str(first)).returncode == 0
    before = sorted(p.relative_to(first) for p in first.rglob("*"))
    result = run_cli_here("data", "import", "gtsrb", str(signs), "--out", str(first / "nested"))
    assert result.returncode == 2
    _one_line(result, "error:", "inside the drivelab dataset")
    assert sorted(p.relative_to(first) for p in first.rglob("*")) == before


def test_default_env_is_defined_once() -> None:
    """``"carracing"`` as a value lives in `drivelab.seeds` only; the registry's alias table
    names CarRacing's own short name, not a default, and the demo names a folder of configs."""
    from drivelab.config.live_section import LiveConfig
    from drivelab.seeds import DEFAULT_ENV
    from drivelab.sweep.spec import SweepEvaluation
    from drivelab.watch.spec import PlayerSpec

    assert LiveConfig.model_fields["env"].default == DEFAULT_ENV
    assert SweepEvaluation().env is None  # a trial is driven in its run's world (`runs.world`)
    assert PlayerSpec.__dataclass_fields__["env"].default == DEFAULT_ENV
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value == "carracing":
                found.append(str(path.relative_to(SRC)))
    assert sorted(found) == ["demo.py", "seeds.py", "sim/registry.py"], found


#: The helper itself; every other writer must call it.
OWN_WRITERS = {"outputs.py"}
#: Names of temporary paths a crash-safe writer fills and then moves into place whole
#: (`outputs.atomic_output`'s ``tmp`` / ``staged``, a ``temporary`` renamed with ``os.replace``).
TEMPORARIES = {"tmp", "staged", "temporary"}


def bare_writes(src: Path) -> list[str]:
    """``X.write_text(...)`` / ``X.write_bytes(...)`` calls on a path that is not a temporary."""
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = str(path.relative_to(src))
        if rel in OWN_WRITERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("write_text", "write_bytes")
                    and not (isinstance(node.func.value, ast.Name) and node.func.value.id in TEMPORARIES)):
                found.append(f"{rel}:{node.lineno}")
    return found


def test_no_bare_file_writes_outside_the_output_helper() -> None:
    """Every file a run or a verb writes goes through `drivelab.outputs` (``write_text`` there is
    a module function, called bare): a ``path.write_text`` leaves half a file on a crash."""
    assert not bare_writes(SRC), bare_writes(SRC)


def test_offline_eval_folders_are_claimed_not_reused(tmp_path: Path) -> None:
    """Two offline scorings of one checkpoint get two folders (mkdir claims), never one."""
    from drivelab.runs.evals import OFFLINE_FILE, offline_confusion, save_offline_eval
    from drivelab.runs.folder import RunFolder

    run = RunFolder(tmp_path / "line_v1")
    run.path.mkdir()
    first = save_offline_eval(run, 5, "test", None, Path("maps/signs.json"), {"a": 1})
    second = save_offline_eval(run, 5, "test", None, Path("maps/signs.json"), {"a": 2})
    assert first.name == "offline_test_batch5_groups-signs" and second.name == f"{first.name}_2"
    assert (first / OFFLINE_FILE).read_text() != (second / OFFLINE_FILE).read_text()
    assert offline_confusion(first, "class") == first / "confusion_class.png"


def test_eval_job_refuses_before_any_work() -> None:
    """The job answers the verb's refusals without the CLI (no run, no track needed)."""
    from drivelab.errors import DrivelabError
    from drivelab.evaluate.job import EvalRequest, drive, engines_for

    assert engines_for(EvalRequest(run="policy.ONNX")) == ["onnx"]
    with pytest.raises(DrivelabError, match="drop --engine torch"):
        engines_for(EvalRequest(run="policy.onnx", engine=("torch",)))
    with pytest.raises(DrivelabError, match="--offline scores a run with the torch engine"):
        engines_for(EvalRequest(run="r", offline="test", engine=("onnx",)))

    def never(*_args, **_kwargs):
        raise AssertionError("no progress before the checks pass")

    with pytest.raises(DrivelabError, match="--baseline 'bogus' is unknown"):
        drive(EvalRequest(baseline=("bogus",)), never, never)
    with pytest.raises(DrivelabError, match="--max-steps must be at least 1"):
        drive(EvalRequest(baseline=("expert",), max_steps=0), never, never)
