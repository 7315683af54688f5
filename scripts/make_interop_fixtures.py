"""Write the interop test fixtures with the REAL donkeycar and lerobot, each in its own venv.

donkeycar pins ``numpy<2`` and lerobot pins its own torch, so neither can live in drivelab's
environment: this script builds a side virtual environment per library OUTSIDE the repo
(default ``/work/sidevenv/<lib>``; ``--venvs DIR`` moves them), and in it

- donkeycar: writes ``tests/fixtures/donkeycar_tub`` with donkeycar's own ``Tub`` writer (two
  sessions, a mode change, two deleted records) and ``donkeycar_expected.json``, the values it
  was given;
- lerobot: writes ``tests/fixtures/lerobot_dataset`` with ``LeRobotDataset.create`` /
  ``add_frame`` / ``save_episode`` / ``finalize`` and ``lerobot_expected.json``;
- ``--check-export DIR``: opens a drivelab export with ``LeRobotDataset(...)`` and prints what
  LeRobot sees (frames, episodes, features, one decoded sample).

``tests/fixtures/interop_VERSIONS`` records which library versions wrote the fixtures.
Run by hand when a format changes (network needed for pip only):

    python scripts/make_interop_fixtures.py                 # (re)write both fixtures
    python scripts/make_interop_fixtures.py --check-export /tmp/carracing_lerobot
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"donkeycar": ["donkeycar==5.3.0", "numpy<2"], "lerobot": ["lerobot==0.4.4"]}

DONKEY = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    import donkeycar
    from donkeycar.parts.tub_v2 import Tub
    out = sys.argv[1]
    inputs = ["cam/image_array", "user/angle", "user/throttle", "user/mode", "imu/acl_x", "lap"]
    types = ["image_array", "float", "float", "str", "float", "int"]
    expected = {"records": [], "deleted": [3, 17], "version": donkeycar.__version__}
    index = 0
    for session in range(2):
        tub = Tub(out, inputs=inputs, types=types, metadata=["car:fixture"])
        for i in range(12):
            y, x = np.mgrid[0:120, 0:160]
            img = np.stack([(x + 7 * index) % 256, (y * 2) % 256, np.full_like(x, 40 * session)], -1).astype(np.uint8)
            angle, throttle = round(np.sin(index / 4.0), 4), round(0.3 + 0.02 * i, 4)
            mode = "user" if not (session == 1 and i >= 8) else "local_angle"
            tub.write_record({"cam/image_array": img, "user/angle": angle, "user/throttle": throttle,
                              "user/mode": mode, "imu/acl_x": 0.1 * index, "lap": session})
            expected["records"].append({"index": index, "session": session, "angle": angle,
                                        "throttle": throttle, "mode": mode, "imu_acl_x": 0.1 * index, "lap": session})
            index += 1
            time.sleep(0.05)  # ~20 Hz, donkeycar's loop rate
        if session == 0:
            tub.delete_records(3)
            time.sleep(1.5)  # the two sessions are apart in time too
        else:
            tub.delete_records(17)
        tub.close()
    json.dump(expected, open(sys.argv[2], "w"), indent=1)
''')

LEROBOT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    root, expected_path = sys.argv[1], sys.argv[2]
    features = {
        "observation.images.front": {"dtype": "video", "shape": (64, 96, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["speed", "yaw_rate", "gear"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["steering", "accel_brake"]},
    }
    ds = LeRobotDataset.create(repo_id="drivelab/fixture", fps=10, features=features, root=root,
                               robot_type="fixture_car", use_videos=True)
    expected = {"episodes": [], "version": lerobot.__version__}
    for ep, length in enumerate((14, 11)):
        rows = []
        for t in range(length):
            y, x = np.mgrid[0:64, 0:96]
            img = np.stack([(x * 2 + 9 * t) % 256, (y * 3) % 256, np.full_like(x, 90 * ep)], -1).astype(np.uint8)
            state = np.array([0.5 * t, 0.01 * (t - ep), float(ep)], np.float32)
            action = np.array([np.sin(t / 3.0), 0.5 - 0.1 * ep], np.float32)
            ds.add_frame({"observation.images.front": img, "observation.state": state, "action": action,
                          "task": f"drive lap {ep}"})
            rows.append({"state": state.tolist(), "action": action.tolist()})
        ds.save_episode()
        expected["episodes"].append({"task": f"drive lap {ep}", "frames": rows})
    ds.finalize()
    json.dump(expected, open(expected_path, "w"), indent=1)
''')

CHECK = textwrap.dedent('''
    import sys
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    # pyav: torchcodec (LeRobot's default decoder) needs FFmpeg's shared libraries on the system
    ds = LeRobotDataset("drivelab/export", root=sys.argv[1], video_backend="pyav")
    print(f"LeRobotDataset: {ds.num_frames} frames, {ds.num_episodes} episodes, fps {ds.fps}")
    lengths = [int(e["length"]) for e in ds.meta.episodes]
    print(f"episode lengths: {lengths}; splits: {ds.meta.info.get('splits')}")
    print("features:", {k: (v["dtype"], tuple(v["shape"])) for k, v in ds.features.items()})
    for i in (0, len(ds) - 1):
        item = ds[i]
        print(f"item {i}:", {k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in item.items()})
    print("stats keys:", sorted(ds.meta.stats))
''')


def side_python(venvs: Path, lib: str, install: bool) -> Path:
    """The side venv's python, created and filled with the pinned packages when missing."""
    python = venvs / lib / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venvs / lib)], check=True)
        install = True
    if install:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES[lib]], check=True)
    return python


def run(python: Path, code: str, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([str(python), "-c", code, *args], check=True, capture_output=True, text=True, env=env)
    return done.stdout


def version(python: Path, module: str) -> str:
    return run(python, f"import importlib.metadata as m; print(m.version({module!r}))").strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venvs", type=Path, default=Path("/work/sidevenv"), help="where the side venvs live")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures", help="fixture folder")
    parser.add_argument("--install", action="store_true", help="(re)install the pinned packages")
    parser.add_argument("--check-export", type=Path, help="a drivelab LeRobot export to open with LeRobotDataset")
    args = parser.parse_args()
    if args.venvs.resolve().is_relative_to(REPO):
        parser.error("--venvs must lie outside the repository")
    lerobot = side_python(args.venvs, "lerobot", args.install)
    if args.check_export is not None:
        print(run(lerobot, CHECK, str(args.check_export)), end="")
        return
    donkey = side_python(args.venvs, "donkeycar", args.install)
    tub, ds = args.out / "donkeycar_tub", args.out / "lerobot_dataset"
    for path in (tub, ds):
        shutil.rmtree(path, ignore_errors=True)
    run(donkey, DONKEY, str(tub), str(args.out / "donkeycar_expected.json"))
    run(lerobot, LEROBOT, str(ds), str(args.out / "lerobot_expected.json"))
    versions = {lib: {pkg: version(py, pkg) for pkg in pkgs}
                for lib, py, pkgs in (("donkeycar", donkey, ("donkeycar", "numpy", "pillow")),
                                      ("lerobot", lerobot, ("lerobot", "datasets", "pyarrow", "av", "torch")))}
    lines = [f"{lib}: " + ", ".join(f"{p} {v}" for p, v in pk.items()) for lib, pk in versions.items()]
    (args.out / "interop_VERSIONS").write_text("written by scripts/make_interop_fixtures.py\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in (tub, ds)}))


if __name__ == "__main__":
    main()
