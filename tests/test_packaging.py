"""drivelab as a user gets it: a wheel, installed into a fresh venv outside the checkout.

The wheel is built from a copy of the project (so the checkout gets no ``build/`` or
``*.egg-info``), without build isolation (no network: setuptools comes from this venv), and
installed with ``--no-deps`` into a new venv. HONEST NOTE: that venv borrows the dependencies
(torch, timm, ...) of the venv running the tests through one ``.pth`` line, which Python appends
AFTER the new venv's own site-packages; so drivelab itself, its configs and its console script
come from the wheel alone (asserted below), while what the wheel depends on is not downloaded again.
The dependency declaration is checked separately: every import of the package resolves to a
base dependency or an extra (`test_every_third_party_import_is_declared`).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _copy_project(to: Path) -> Path:
    to.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, to / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", to / "src", symlinks=True, ignore=ignore)  # drivelab/configs -> ../../configs
    shutil.copytree(ROOT / "configs", to / "configs", ignore=ignore)
    return to


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "SDL_VIDEODRIVER": "dummy", "OMP_NUM_THREADS": "1", "COLUMNS": "160"}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the freshly built wheel installed (see the module doc)."""
    work = tmp_path_factory.mktemp("wheel")
    project = _copy_project(work / "project")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(work / "dist"), str(project)],
                           capture_output=True, text=True, timeout=300, env=_env())
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (work / "dist").glob("drivelab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "drivelab/configs/carracing/pilotnet.yaml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                                "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True, timeout=300, env=_env())
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies, borrowed (appended after the new venv's own site-packages)
    (Path(site) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_the_wheel_trains_and_evaluates_from_another_directory(
    wheel_venv: Path, small_dataset: Path, tmp_path: Path
) -> None:
    """``drivelab train carracing/pilotnet`` (a shipped config by name) and ``eval`` in a folder
    that is not the checkout, with drivelab imported from the wheel."""
    bin_dir = wheel_venv / "bin"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_dir / "drivelab"), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=_env())

    where = subprocess.run([str(bin_dir / "python"), "-c", "import drivelab; print(drivelab.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60, env=_env())
    assert Path(where.stdout.strip()).is_relative_to(wheel_venv), where.stdout + where.stderr
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("drivelab "), version.stderr
    trained = run("train", "carracing/pilotnet", f"data.path={small_dataset}", "data.input_size=[64,64]",
                  "train.batch_size=8", "train.max_batches=2", "train.val_every=2", "train.checkpoint_every=2",
                  "train.warmup_batches=0", "--no-progress")
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = tmp_path / "runs" / "carracing_pilotnet" / "carracing_pilotnet_v1"
    assert (run_dir / "checkpoints" / "batch_2.safetensors").is_file()
    driven = run("eval", "carracing_pilotnet_v1", "--episodes", "1", "--max-steps", "20", "--workers", "1")
    assert driven.returncode == 0, driven.stderr[-3000:]
    assert "carracing_pilotnet_v1" in driven.stdout


def test_every_third_party_import_is_declared() -> None:
    """Each top-level module the package imports is the standard library's, a base dependency's
    or an extra's: a base install never meets an undeclared import."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = " ".join(project["dependencies"] + [d for extra in project["optional-dependencies"].values()
                                                    for d in extra]).lower().replace("-", "_")
    # import name -> the distribution that provides it, where the two differ
    provided_by = {"yaml": "pyyaml", "lightning_fabric": "lightning_fabric", "gymnasium": "gymnasium",
                   "highway_env": "highway_env", "pydantic_core": "pydantic", "Box2D": "gymnasium[box2d]",
                   "pygame": "gymnasium[box2d]", "PIL": "matplotlib", "av": "av", "click": "typer",
                   "google": "tensorboard", "typing_extensions": "pydantic", "packaging": "lightning_fabric",
                   "huggingface_hub": "timm", "psutil": "ray"}
    found: set[str] = set()
    for path in (ROOT / "src" / "drivelab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    third_party = sorted(m for m in found - set(sys.stdlib_module_names) if m != "drivelab")
    undeclared = [m for m in third_party if provided_by.get(m, m).lower().replace("-", "_") not in declared]
    assert not undeclared, f"imported but in no dependency list of pyproject.toml: {undeclared}"


CLI_CHECKS = """\
import contextlib, io, json, sys
for name in ("ray", "onnx", "onnxruntime", "onnxscript", "pyarrow", "av"):
    sys.modules[name] = None  # what an import sees where the extra is not installed
from drivelab.cli import main

def run(*args):
    err = io.StringIO()
    sys.argv = ["drivelab", *args]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
    return [code, err.getvalue(), "torch" in sys.modules or "lightning_fabric" in sys.modules]

shown = {
    "missing": run("train", "nonexistent.yaml"),
    "bad_key": run("train", "carracing/pilotnet", "train.bogus=1"),
    "flag": run("train", "carracing/pilotnet", "--max-batches", "50"),
    "sweep": run("sweep", "configs/studies/balancing.yaml"),
    "live": run("live", "carracing/pilotnet"),
    "export": run("export", "some_run_v1"),
}
print(json.dumps(shown))
"""


def test_config_errors_hints_and_missing_extras_are_one_line(tmp_path: Path) -> None:
    """In a process where Ray, the ONNX stack, pyarrow and PyAV cannot be imported: a config
    mistake is answered before torch or Fabric is imported; ``--max-batches 50`` names the
    override; each verb of an extra names the ``pip install`` that brings it (`drivelab.extras`)."""
    import json

    env = {**_env(), "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", CLI_CHECKS], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (code, err, _heavy) in shown.items():
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (name, err)
    missing = shown["missing"][1]
    assert "config file not found: 'nonexistent.yaml'; shipped configs: " in missing
    assert "carracing/pilotnet," in missing
    assert "train.bogus: unknown key" in shown["bad_key"][1]
    assert not shown["missing"][2] and not shown["bad_key"][2], "a config error imported torch/Fabric"
    assert "did you mean train.max_batches=50?" in shown["flag"][1]
    for name, extra in (("sweep", "ray"), ("live", "ray"), ("export", "onnx")):  # interop: test_interop
        assert f"pip install 'drivelab[{extra}]'" in shown[name][1], (name, shown[name][1])


def test_version_and_config_by_name() -> None:
    from importlib.metadata import version

    from conftest import run_cli_here
    from drivelab.config import load_config
    from drivelab.config.shipped import shipped_configs

    shown = run_cli_here("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"drivelab {version('drivelab')}"
    assert {"carracing/pilotnet", "pilot/tiny_net", "traffic/roundabout_pilotnet"} <= set(shipped_configs())
    for name in ("carracing/pilotnet", "carracing/pilotnet.yaml", "configs/carracing/pilotnet.yaml"):
        assert load_config(name, ["train.lr=0.5"]).line == "carracing_pilotnet"
