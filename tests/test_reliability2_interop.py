"""Issue 29, interop: hostile donkeycar tubs and LeRobot datasets, full disks and Ctrl-C.

Every case builds real files (a tub of real JPEGs, a LeRobot dataset written by LeRobot or by our
exporter, a real tmpfs that fills up, a real `drivelab` process sent SIGINT) and checks the
promise: one ``error:`` line (exit 2), no traceback, nothing left behind (no half dataset, no
``.collect.lock``, no hidden partial export), and nothing outside the dataset folder read or
echoed.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli_here
from drivelab.data.store import DatasetStore

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEROBOT = FIXTURES / "lerobot_dataset"
#: What a password file's first line looks like; rich once rendered its ``:x:`` as an emoji.
SECRET = "root:x:0:0:root:/root:/bin/bash\n"
EMOJI = "\u274c"  # what rich makes of ":x:"


# --------------------------------------------------------------------------- building inputs
def make_tub(root: Path, records: int = 12, sessions: int = 1, size: tuple[int, int] = (24, 32),
             quality: int = 90, extra: dict | None = None) -> Path:
    """A donkeycar tub v2 of ``records`` noise JPEGs (as donkeycar lays it out), ~20 Hz."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(records):
        name = f"{i}_cam_image_array_.jpg"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "images" / name,
                                                                              quality=quality)
        lines.append({"_index": i, "_session_id": f"s{i * sessions // records}", "_timestamp_ms": 1000 + 50 * i,
                      "cam/image_array": name, "user/angle": 0.1, "user/throttle": 0.3, "user/mode": "user",
                      **(extra or {})})
    write_catalog(root, lines)
    inputs = ["cam/image_array", "user/angle", "user/throttle", "user/mode", *(extra or {})]
    types = ["image_array", "float", "float", "str", *["float"] * len(extra or {})]
    write_manifest(root, inputs, types, ["catalog_0.catalog"])
    return root


def write_catalog(root: Path, lines: list) -> None:
    (root / "catalog_0.catalog").write_text("".join(
        (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def write_manifest(root: Path, inputs: list, types: list, paths: list) -> None:
    manifest = [inputs, types, {}, {"created_at": 0, "sessions": {}},
                {"paths": paths, "current_index": 0, "max_len": 1000, "deleted_indexes": []}]
    (root / "manifest.json").write_text("".join(json.dumps(x) + "\n" for x in manifest))


def catalog(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "catalog_0.catalog").read_text().splitlines()]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "passwd"
    path.parent.mkdir(exist_ok=True)
    path.write_text(SECRET)
    return path


def lerobot_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(LEROBOT, tmp_path / "le"))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# --------------------------------------------------------------------------- checking outcomes
def assert_one_error(result: subprocess.CompletedProcess, out: Path, *needles: str) -> str:
    """Exit 2, one ``error:`` line holding every needle, no traceback, no secret, no emoji, and
    nothing at ``out`` nor any hidden partial beside it."""
    text = result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, text
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    for needle in needles:
        assert needle in lines[0], text
    assert "Traceback" not in text and "root:x" not in text and EMOJI not in text, text
    assert not out.exists() and not out.is_symlink(), sorted(map(str, out.rglob("*")))
    assert not list(out.parent.glob(f".{out.name}*")), "a hidden partial output was left"
    return lines[0]


def import_dk(tub: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli_here("data", "import", "donkeycar", str(tub), "--out", str(out), *extra)


# --------------------------------------------------------------------------- item 3 + 22: paths
def test_catalog_image_outside_the_tub_is_refused_not_read(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    tub = make_tub(tmp_path / "tub")
    for k, name in enumerate((str(secret), "../../outside/passwd", "x/../../../outside/passwd")):
        lines = catalog(tub)
        lines[4]["cam/image_array"] = name
        write_catalog(tub, lines)
        out = tmp_path / f"out{k}"
        assert_one_error(import_dk(tub, out), out, "catalog_0.catalog line 5 (_index 4)",
                         "lies outside the dataset folder")
    # a symlink inside images/ that leads outside is the same thing
    lines = catalog(tub)
    write_catalog(tub, [*lines[:4], {**lines[4], "cam/image_array": "4_cam_image_array_.jpg"}, *lines[5:]])
    (tub / "images" / "4_cam_image_array_.jpg").unlink()
    (tub / "images" / "4_cam_image_array_.jpg").symlink_to(secret)
    assert_one_error(import_dk(tub, tmp_path / "out_link"), tmp_path / "out_link", "(_index 4)",
                     "lies outside the dataset folder")


def test_manifest_catalog_outside_the_tub_is_refused_and_never_echoed(tmp_path: Path) -> None:
    """The /etc/passwd case: its first line was echoed, and rich drew ``:x:`` as an emoji."""
    secret = secret_file(tmp_path)
    tub = make_tub(tmp_path / "tub")
    inputs = ["cam/image_array", "user/angle", "user/throttle", "user/mode"]
    types = ["image_array", "float", "float", "str"]
    for k, name in enumerate((str(secret), "../outside/passwd")):
        write_manifest(tub, inputs, types, [name])
        out = tmp_path / f"out{k}"
        assert_one_error(import_dk(tub, out), out, "manifest.json line 5", "lies outside the dataset folder")
    # a catalog inside the tub whose line is not JSON: named by line, its text never repeated
    write_manifest(tub, inputs, types, ["catalog_0.catalog"])
    write_catalog(tub, [*catalog(tub)[:3], SECRET.strip()])
    assert_one_error(import_dk(tub, tmp_path / "out_bad"), tmp_path / "out_bad",
                     "catalog_0.catalog line 4 is not JSON")  # and no "root:x" in it


def test_tub_keys_are_printed_without_markup_or_emoji(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", extra={"imu/:x:": 0.5, "[red]lap": 1.0})
    result = import_dk(tub, tmp_path / "dk")
    assert result.returncode == 0, result.stderr
    assert "imu_:x: <- imu/:x:" in result.stdout and "[red]lap" in result.stdout, result.stdout
    assert EMOJI not in result.stdout


def test_lerobot_video_path_outside_the_dataset_is_refused(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    shutil.copy(LEROBOT / "videos/observation.images.front/chunk-000/file-000.mp4", secret.parent / "v.mp4")
    root = lerobot_copy(tmp_path)
    for k, pattern in enumerate(("../outside/v.mp4", str(secret.parent / "v.mp4"),
                                 "../outside/{video_key}/../v.mp4")):
        edit_json(root / "meta/info.json", lambda info, p=pattern: info.update(video_path=p))
        out = tmp_path / f"out{k}"
        assert_one_error(run_cli_here("data", "import", "lerobot", str(root), "--out", str(out)), out,
                         "video_path", "episode 0", "lies outside the dataset folder")


# --------------------------------------------------------------------------- item 23 + 24
@pytest.mark.parametrize(("key", "value", "shown"), [
    ("user/angle", "NaN", "user/angle is nan"), ("user/throttle", "-Infinity", "user/throttle is -inf"),
    ("user/angle", '"left"', "user/angle is 'left', not a number"),
    ("user/angle", "true", "user/angle is True, not a number"),
    ("user/throttle", "1e39", "user/throttle is 1e+39, not a finite float32"),
    ("user/throttle", "1" + "0" * 400, "user/throttle is 1000"),
])
def test_a_bad_value_names_the_record_and_the_field(tmp_path: Path, key: str, value: str, shown: str) -> None:
    tub = make_tub(tmp_path / "tub")
    lines = [json.dumps(r) for r in catalog(tub)]
    lines[6] = lines[6].replace(f'"{key}": {json.dumps(catalog(tub)[6][key])}', f'"{key}": {value}')
    write_catalog(tub, lines)
    line = assert_one_error(import_dk(tub, tmp_path / "out"), tmp_path / "out",
                            "catalog_0.catalog line 7 (_index 6)", shown)
    assert "simulator" not in line


@pytest.mark.parametrize(("args", "needle", "absent"), [
    (["--gap", "-1"], "--gap -1: give the seconds", "--mode"),
    (["--gap", "nan"], "--gap nan:", "--mode"),
    (["--mode", "auto"], "--mode 'auto': the one mode is `user`", "--gap"),
])
def test_each_bad_option_gets_its_own_message(tmp_path: Path, args: list[str], needle: str, absent: str) -> None:
    tub = make_tub(tmp_path / "tub")
    line = assert_one_error(import_dk(tub, tmp_path / "out", *args), tmp_path / "out", needle)
    assert absent not in line and "None" not in line


# --------------------------------------------------------------------------- item 17: bad tubs
def _image(name: str, data: bytes):
    def change(tub: Path) -> None:
        (tub / "images" / "3_cam_image_array_.jpg").write_bytes(data)
    return change


def _catalog_line(text: str):
    def change(tub: Path) -> None:
        lines = [json.dumps(r) for r in catalog(tub)]
        write_catalog(tub, [*lines[:5], text, *lines[5:]])
    return change


def _index_x(tub: Path) -> None:
    lines = catalog(tub)
    lines[2]["_index"] = "x"
    write_catalog(tub, lines)


BAD_TUBS = {
    "zero-byte image": (_image("empty", b""), "(_index 3): 3_cam_image_array_.jpg is not an image"),
    "text as image": (_image("text", SECRET.encode()), "(_index 3): 3_cam_image_array_.jpg is not an image"),
    "30000x30000 bomb": (_image("bomb", png_header(30000, 30000)), "decompression-bomb limit"),
    "5000x5000 header": (_image("big", png_header(5000, 5000)), "is 5000x5000 px"),
    "truncated jpeg": (lambda t: (t / "images/3_cam_image_array_.jpg").write_bytes(  # header kept
        (t / "images/3_cam_image_array_.jpg").read_bytes()[:-400]), "(_index 3): 3_cam_image_array_.jpg cannot be decoded"),
    "_index x": (_index_x, "catalog_0.catalog line 3: _index is 'x'"),
    "line is an array": (_catalog_line("[1, 2, 3]"), "line 6: a record must be a JSON object, not a JSON array"),
    "line is a string": (_catalog_line('"cam"'), "line 6: a record must be a JSON object, not a JSON string"),
    "deep nesting": (_catalog_line("[" * 100000), "line 6 is not JSON"),
    "image name a number": (_catalog_line(json.dumps({"_index": 30, "cam/image_array": 5})),
                            "is not a path string"),
    "image name too long": (_catalog_line(json.dumps({"_index": 30, "cam/image_array": "x" * 5000})),
                            "is not a path string"),
    "image a symlink loop": (lambda t: ((t / "images/loop_a").symlink_to("loop_b"), (t / "images/loop_b").symlink_to(
        "loop_a"), _catalog_line(json.dumps({"_index": 30, "cam/image_array": "loop_a"}))(t)), "cannot be resolved"),
}


@pytest.mark.parametrize("case", list(BAD_TUBS))
def test_bad_tub_is_one_line_and_leaves_nothing(case: str, tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub")
    change, needle = BAD_TUBS[case]
    change(tub)
    assert_one_error(import_dk(tub, tmp_path / "out"), tmp_path / "out", needle)


def test_huge_size_is_refused_by_its_memory_estimate(tmp_path: Path) -> None:
    """Was OOM-killed at 23 GB with a stale .collect.lock; now refused before anything exists."""
    tub = make_tub(tmp_path / "tub")
    start = time.perf_counter()
    line = assert_one_error(import_dk(tub, tmp_path / "out", "--size", "100000", "100000"), tmp_path / "out",
                            "frames of 100000x100000x3 take about", "is available: use a smaller --size")
    assert "GiB of memory for an episode of 12 frames" in line and time.perf_counter() - start < 10


# --------------------------------------------------------------------------- full disks
@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 2 MiB tmpfs (needs root, as in the dev container); skipped where mount is refused."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()[:80]}); the simulated ENOSPC tests run")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_import_onto_a_full_tmpfs_leaves_nothing(small_disk: Path, tmp_path: Path) -> None:
    # small JPEGs (quality 5) whose lossless frames take ~2x the disk: passes the up-front
    # lower bound, then fills the 2 MiB disk half-way through the writes
    tub = make_tub(tmp_path / "tub", records=120, sessions=4, size=(120, 160), quality=5)
    out = small_disk / "dk"
    assert_one_error(import_dk(tub, out), out, "the disk is full", "nothing was written")
    assert list(small_disk.iterdir()) == []  # no half dataset, no .collect.lock
    # JPEGs that alone exceed the free space: refused up front with the figures
    big = make_tub(tmp_path / "big", records=150, size=(120, 160), quality=90)
    assert_one_error(import_dk(big, out), out, "needs at least", "is free there")
    assert list(small_disk.iterdir()) == []


def test_export_images_onto_a_full_tmpfs_leaves_nothing(small_disk: Path, tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", records=120, sessions=3, size=(120, 160), quality=5)
    assert import_dk(tub, tmp_path / "dk").returncode == 0
    out = small_disk / "nested" / "le"
    result = run_cli_here("data", "export", "lerobot", str(tmp_path / "dk"), "--images", "--out", str(out))
    assert_one_error(result, out, "the disk is full", "nothing was written")
    assert list(small_disk.iterdir()) == []  # neither the partial export nor the folder it made


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_import_disk_full_simulated_at_the_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no tmpfs can be mounted: the second episode's write fails with ENOSPC, after the
    first was committed for real; the whole dataset goes, lock included."""
    import drivelab.data.dataset_out as dataset_out

    real = dataset_out.write_episode
    monkeypatch.setattr(dataset_out, "write_episode",
                        lambda store, index, record: real(store, index, record) if index == 0 else _enospc())
    tub = make_tub(tmp_path / "tub", records=20, sessions=2)
    assert_one_error(import_dk(tub, tmp_path / "out"), tmp_path / "out", "the disk is full")


def test_export_disk_full_simulated_at_the_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import drivelab.interop.lerobot_export as export

    tub = make_tub(tmp_path / "tub", records=20, sessions=2)
    assert import_dk(tub, tmp_path / "dk").returncode == 0
    calls = []
    real = export._png
    monkeypatch.setattr(export, "_png", lambda frame: real(frame) if calls.append(1) or len(calls) < 15 else _enospc())
    out = tmp_path / "new" / "le"
    result = run_cli_here("data", "export", "lerobot", str(tmp_path / "dk"), "--images", "--out", str(out))
    assert_one_error(result, out, "the disk is full")
    assert not (tmp_path / "new").exists()


def test_lerobot_import_disk_full_simulated_at_the_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import drivelab.data.dataset_out as dataset_out

    real = dataset_out.write_episode
    monkeypatch.setattr(dataset_out, "write_episode",
                        lambda store, index, record: real(store, index, record) if index == 0 else _enospc())
    out = tmp_path / "out"
    assert_one_error(run_cli_here("data", "import", "lerobot", str(LEROBOT), "--out", str(out)), out,
                     "the disk is full")


def test_ctrl_c_during_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import drivelab.interop.lerobot_export as export

    tub = make_tub(tmp_path / "tub", records=20, sessions=2)
    assert import_dk(tub, tmp_path / "dk").returncode == 0
    calls = []

    def interrupted(frame):
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        return real(frame)

    real = export._png
    monkeypatch.setattr(export, "_png", interrupted)
    out = tmp_path / "le"
    result = run_cli_here("data", "export", "lerobot", str(tmp_path / "dk"), "--images", "--out", str(out))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 130 and len(lines) == 1 and "nothing was written" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dk", "tub"]


# --------------------------------------------------------------------------- item 18: bad LeRobot
@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeRobot dataset with meta/drivelab.json, PNG frames: our export of an imported tub."""
    base = tmp_path_factory.mktemp("exported")
    make_tub(base / "tub", records=16, sessions=2)
    assert import_dk(base / "tub", base / "dk").returncode == 0
    result = run_cli_here("data", "export", "lerobot", str(base / "dk"), "--images", "--out", str(base / "le"))
    assert result.returncode == 0, result.stderr
    return base / "le"


def _truncate(root: Path) -> None:
    data = root / "data/chunk-000/file-000.parquet"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _features(value):
    return lambda root: edit_json(root / "meta/info.json", lambda info: info.update(features=value))


def _camera_without_shape(root: Path) -> None:
    edit_json(root / "meta/info.json", lambda info: info["features"]["observation.images.front"].pop("shape"))


def _video_path(pattern: str):
    return lambda root: edit_json(root / "meta/info.json", lambda info: info.update(video_path=pattern))


BAD_LEROBOT = {
    "truncated parquet": (LEROBOT, _truncate, "file-000.parquet: not a readable Parquet file"),
    "drivelab.json not JSON": (None, lambda r: (r / "meta/drivelab.json").write_text(SECRET), "is not readable JSON"),
    "drivelab.json an array": (None, lambda r: (r / "meta/drivelab.json").write_text("[1]"), "lacks its dataset_attrs"),
    "drivelab.json bad attrs": (None, lambda r: edit_json(r / "meta/drivelab.json",
                                                         lambda d: d.update(dataset_attrs={"fps": "x"})),
                                "its dataset_attrs are damaged"),
    "drivelab.json short episode_info": (None, lambda r: edit_json(r / "meta/drivelab.json",
                                                                  lambda d: d.update(episode_info=[{}])),
                                         "episode_info lists 1 episodes"),
    "unknown placeholder": (LEROBOT, _video_path("videos/{video_key}/{episode_index}.mp4"), "placeholder {episode_index}"),
    "attribute placeholder": (LEROBOT, _video_path("videos/{video_key.__class__}.mp4"), "placeholder {video_key.__class__}"),
    "positional placeholder": (LEROBOT, _video_path("videos/{0}.mp4"), "placeholder {0}"),
    "unbalanced braces": (LEROBOT, _video_path("videos/{video_key.mp4"), "not a valid pattern"),
    "features a list": (LEROBOT, _features([]), "`features` must map each feature name to an object"),
    "feature a number": (LEROBOT, _features({"action": 5}), "`features` must map each feature name"),
    "camera without shape": (LEROBOT, _camera_without_shape, "observation.images.front has shape None"),
    "info.json an array": (LEROBOT, lambda r: (r / "meta/info.json").write_text("[]"), "must hold a JSON object"),
    "camera of 10^10 x 10^10": (LEROBOT, lambda r: edit_json(r / "meta/info.json", lambda i: i["features"][
        "observation.images.front"].update(shape=[10**10, 10**10, 3])), "of memory for an episode of 14 frames"),
    "fps a string": (LEROBOT, lambda r: edit_json(r / "meta/info.json", lambda i: i.update(fps="ten")), "fps is 'ten'"),
}


@pytest.mark.parametrize("case", list(BAD_LEROBOT))
def test_bad_lerobot_is_one_line_and_leaves_nothing(case: str, tmp_path: Path, exported: Path) -> None:
    source, change, needle = BAD_LEROBOT[case]
    root = Path(shutil.copytree(source or exported, tmp_path / "le"))
    change(root)
    out = tmp_path / "out"
    assert_one_error(run_cli_here("data", "import", "lerobot", str(root), "--out", str(out)), out, needle)


def test_lerobot_image_cell_path_outside_is_refused(tmp_path: Path, exported: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    secret = secret_file(tmp_path)
    root = Path(shutil.copytree(exported, tmp_path / "le"))
    data = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(data)
    key = "observation.images.front"
    cells = table.column(key).to_pylist()
    cells[2] = {"bytes": None, "path": str(secret)}
    table = table.set_column(table.schema.get_field_index(key), table.schema.field(key),
                             pa.array(cells, table.schema.field(key).type))
    pq.write_table(table, data)
    out = tmp_path / "out"
    assert_one_error(run_cli_here("data", "import", "lerobot", str(root), "--out", str(out)), out,
                     "episode 0 frame 2", "lies outside the dataset folder")


# --------------------------------------------------------------------------- item 8: Ctrl-C
def test_ctrl_c_mid_import_leaves_nothing_and_the_rerun_works(tmp_path: Path) -> None:
    """SIGINT lands while zarr writes an episode's chunks (the moment the first chunk folder
    appears). zarr's IO thread kept writing after the cleanup and recreated OUT/_staging/...
    without zarr.json; the cleanup now waits for those writes, so OUT is gone for good."""
    tub = make_tub(tmp_path / "tub", records=600, sessions=2, size=(120, 160))
    out = tmp_path / "out"
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "COLUMNS": "160"}
    # Python leaves SIGINT ignored when started as a background job: ask for Ctrl-C's handler
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv = ['drivelab', *sys.argv[1:]]; runpy.run_module('drivelab.cli', run_name='__main__')")
    proc = subprocess.Popen(
        [sys.executable, "-c", start, "data", "import", "donkeycar", str(tub), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("_staging/*/frames/c")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the import ended before it wrote a chunk"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    time.sleep(1.0)  # a write still in flight would land by now
    assert not out.exists(), sorted(str(p.relative_to(out)) for p in out.rglob("*"))[:5]
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "nothing was written" in lines[0], stderr
    rerun = import_dk(tub, out)
    assert rerun.returncode == 0, rerun.stderr
    assert sum(e.length for e in DatasetStore.open(out).episodes()) == 600


def _skeleton(out: Path) -> None:
    """What the race left: _staging groups with chunk files, a lock file, no zarr.json."""
    chunk = out / "_staging" / "000001-0123abcd" / "frames" / "c" / "3" / "0" / "0"
    chunk.mkdir(parents=True)
    (chunk / "0").write_bytes(b"\x01" * 64)
    (out / "_staging" / "000002-89abcdef").mkdir()
    (out / ".collect.lock").touch()


def test_verify_removes_an_interrupted_imports_skeleton(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _skeleton(out)
    tub = make_tub(tmp_path / "tub")
    for told in (run_cli_here("data", "verify", str(out)), run_cli_here("data", "info", str(out)), import_dk(tub, out)):
        assert told.returncode == 2 and "interrupted import" in told.stderr, told.stderr
        assert f"drivelab data verify --remove-leftovers {out}" in " ".join(told.stderr.split()), told.stderr
    assert (out / "_staging").is_dir()  # only told, nothing removed
    removed = run_cli_here("data", "verify", "--remove-leftovers", str(out))
    assert removed.returncode == 0 and "removed" in removed.stdout, removed.stderr
    assert not out.exists()
    assert import_dk(tub, out).returncode == 0  # the rerun is no longer refused


@pytest.mark.parametrize("extra", ["notes.txt", "_staging/mine", "episodes/000000"])
def test_verify_keeps_a_folder_that_is_not_only_a_skeleton(tmp_path: Path, extra: str) -> None:
    out = tmp_path / "out"
    _skeleton(out)
    (out / extra).parent.mkdir(parents=True, exist_ok=True)
    (out / extra).write_text("someone's")
    result = run_cli_here("data", "verify", "--remove-leftovers", str(out))
    assert result.returncode == 2 and "not a drivelab dataset" in result.stderr, result.stderr
    assert (out / extra).read_text() == "someone's" and (out / "_staging" / "000001-0123abcd").is_dir()


def test_verify_skeleton_removal_waits_for_a_live_writer(tmp_path: Path) -> None:
    from drivelab.data.locks import writer_lock

    out = tmp_path / "out"
    _skeleton(out)
    with writer_lock(out):
        result = run_cli_here("data", "verify", "--remove-leftovers", str(out))
    assert result.returncode == 2 and "nothing was removed" in result.stderr, result.stderr
    assert (out / "_staging" / "000001-0123abcd").is_dir()


def test_png_header_helper_is_what_pil_reads() -> None:
    with Image.open(io.BytesIO(png_header(5000, 4000))) as img:
        assert img.size == (5000, 4000)
