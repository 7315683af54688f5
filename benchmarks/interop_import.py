"""Import throughput of `drivelab data import donkeycar`: the real-donkeycar fixture and a big synthetic tub.

    python benchmarks/interop_import.py [--frames 20000] [--repeats 3] [--keep DIR]

1. The fixture tests/fixtures/donkeycar_tub (written by donkeycar's own Tub writer): frames/s of
   the whole import (read + check the catalog, decode JPEGs, commit episodes), median of repeats.
2. A synthetic tub v2 of ``--frames`` frames (160x120 JPEG, donkeycar's default camera), written
   here in donkeycar's layout (manifest.json's five lines, catalog_N.catalog of 1000 records with
   their .catalog_manifest, images/<i>_cam_image_array_.jpg, a few deleted indexes, two sessions),
   imported once per repeat. Baseline in the same sitting: decoding the same JPEGs alone (the
   least any importer must do), so the ratio says what the store writes cost on top.

``--keep DIR`` leaves the synthetic tub and its last import in DIR (to train on it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from drivelab.interop.donkeycar import DonkeyOptions, import_donkeycar

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "donkeycar_tub"
INPUTS = ["cam/image_array", "user/angle", "user/throttle", "user/mode", "imu/acl_x"]
TYPES = ["image_array", "float", "float", "str", "float"]
MAX_LEN = 1000  # donkeycar's records per catalog


def write_tub(path: Path, frames: int, seed: int = 0) -> None:
    """A tub v2 as donkeycar writes it: two sessions of a car driving a smooth random path."""
    rng = np.random.default_rng(seed)
    (path / "images").mkdir(parents=True)
    y, x = np.mgrid[0:120, 0:160]
    angle = np.clip(np.cumsum(rng.normal(0, 0.05, frames)), -1, 1)
    t0 = 1_700_000_000_000
    catalogs, lines, lengths = [], [], []

    def flush(n: int) -> None:
        name = f"catalog_{n}.catalog"
        (path / name).write_text("".join(lines))
        (path / f"{name}_manifest").write_text(json.dumps(
            {"created_at": t0 / 1000, "line_lengths": lengths, "path": f"{name}_manifest",
             "start_index": n * MAX_LEN}))
        catalogs.append(name)
        lines.clear()
        lengths.clear()

    for i in range(frames):
        session = 0 if i < frames // 2 else 1
        shift = int(40 * angle[i])
        img = np.stack([(x + shift + i) % 256, (y * 2) % 256, np.full_like(x, 60 + 80 * session)], -1)
        Image.fromarray(img.astype(np.uint8)).save(path / "images" / f"{i}_cam_image_array_.jpg", quality=85)
        rec = {"_index": i, "_session_id": f"24-01-01_{session}", "_timestamp_ms": t0 + 50 * i + 60_000 * session,
               "cam/image_array": f"{i}_cam_image_array_.jpg", "imu/acl_x": round(float(rng.normal()), 4),
               "user/angle": round(float(angle[i]), 4), "user/mode": "user",
               "user/throttle": round(0.3 + 0.2 * float(np.cos(i / 50)), 4)}
        line = json.dumps(rec) + "\n"
        lines.append(line)
        lengths.append(len(line))
        if len(lines) == MAX_LEN:
            flush(i // MAX_LEN)
    if lines:
        flush(frames // MAX_LEN)
    deleted = [int(d) for d in rng.choice(frames, size=max(1, frames // 1000), replace=False)]
    manifest = [INPUTS, TYPES, {}, {"created_at": t0 / 1000, "sessions": {
        "all_full_ids": ["24-01-01_0", "24-01-01_1"], "last_id": 1, "last_full_id": "24-01-01_1"}},
        {"paths": catalogs, "current_index": frames, "max_len": MAX_LEN, "deleted_indexes": sorted(deleted)}]
    (path / "manifest.json").write_text("\n".join(json.dumps(m) for m in manifest) + "\n")


def decode_only(tub: Path) -> float:
    """Seconds to decode every JPEG of ``tub`` to RGB (the baseline)."""
    start = time.perf_counter()
    for f in (tub / "images").iterdir():
        with Image.open(f) as img:
            np.asarray(img.convert("RGB"))
    return time.perf_counter() - start


def timed_import(tub: Path, out: Path) -> tuple[float, int, int]:
    shutil.rmtree(out, ignore_errors=True)
    report = import_donkeycar([tub], out, DonkeyOptions(val_episodes=1))
    return report.seconds, report.frames, report.episodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="leave the synthetic tub and its import here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = args.keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        runs = [timed_import(FIXTURE, tmp / "fixture_import") for _ in range(max(args.repeats, 3))]
        sec = statistics.median(r[0] for r in runs)
        print(f"fixture {FIXTURE.name} (written by donkeycar Tub): "
              f"{runs[0][1]} frames, {runs[0][2]} episodes, median {sec:.3f} s = {runs[0][1] / sec:.0f} frames/s")
        tub = tmp / "synthetic_tub"
        shutil.rmtree(tub, ignore_errors=True)
        start = time.perf_counter()
        write_tub(tub, args.frames)
        print(f"synthetic tub: {args.frames} frames written in {time.perf_counter() - start:.1f} s")
        base = statistics.median(decode_only(tub) for _ in range(args.repeats))
        runs = [timed_import(tub, tmp / "synthetic_import") for _ in range(args.repeats)]
        sec = statistics.median(r[0] for r in runs)
        frames = runs[0][1]
        print(f"synthetic import: {frames} frames ({args.frames - frames} deleted skipped), {runs[0][2]} episodes, "
              f"median {sec:.1f} s = {frames / sec:.0f} frames/s")
        print(f"baseline JPEG decode only: median {base:.1f} s = {args.frames / base:.0f} frames/s; "
              f"import / decode time = {sec / base:.2f}x")


if __name__ == "__main__":
    main()
