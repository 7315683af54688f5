"""`drivelab data edit` and `data view` on a demo-sized dataset: throughput, and copy against a view.

    OMP_NUM_THREADS=1 python benchmarks/data_edit.py DEMO_DATASET [--repeats 3] [--work /tmp/bench]

Measured, medians of ``--repeats`` runs in this sitting:
- ``drop 1 episode`` through `edit_dataset` (kept episodes committed through `dataset_out` as
  chunk-file copies, sha256 of the source before and after), the same with every episode decoded
  and re-encoded (``copy_chunks=False``), and a ``trim`` (one episode re-encoded, the rest
  copied), against two ways that stand for "a view onto the source's chunks": copying the kept
  episode folders byte for byte (``shutil.copytree``, the floor of any copy) and hard-linking
  their chunk files (what a view costs: no bytes, but the new dataset shares the source's inodes);
- the sha256 of the source alone (the provenance's share of the edit);
- ``merge`` of two demo-sized datasets (the demo dataset and a byte copy of it);
- ``data view`` of the default 4 episodes: time and bytes of the page.
Prints the CPU, every median, and the ratio of each against the byte copy.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from drivelab.data.edit import dataset_checksum, edit_dataset
from drivelab.data.records import EPISODES
from drivelab.data.store import DatasetStore


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def median_time(fn: Callable[[int], None], repeats: int) -> float:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def byte_copy(source: Path, target: Path, skip: str, link: bool) -> None:
    """The kept episode folders copied (or hard-linked) file by file: no decode, no re-encode."""
    def copy(src: str, dst: str) -> None:
        os.link(src, dst) if link else shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=copy,
                    ignore=lambda folder, names: [skip] if Path(folder).name == EPISODES else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/data_edit_bench"))
    args = parser.parse_args()
    store = DatasetStore.open(args.dataset)
    episodes = store.episodes()
    frames = sum(e.length for e in episodes)
    first = episodes[0].name
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    print(f"CPU: {cpu_name()}; dataset {args.dataset}: {len(episodes)} episodes, {frames} frames, "
          f"{folder_bytes(args.dataset) / 1e6:.0f} MB on disk; medians of {args.repeats}")

    w = args.work
    copy_s = median_time(lambda i: byte_copy(args.dataset, w / f"copy{i}", first, link=False), args.repeats)
    link_s = median_time(lambda i: byte_copy(args.dataset, w / f"link{i}", first, link=True), args.repeats)
    sha_s = median_time(lambda i: dataset_checksum(args.dataset), args.repeats)
    drop_s = median_time(lambda i: edit_dataset(args.dataset, w / f"drop{i}", "drop", [str(episodes[0].index)]),
                         args.repeats)
    reencode_s = median_time(lambda i: edit_dataset(args.dataset, w / f"reenc{i}", "drop", [str(episodes[0].index)],
                                                    copy_chunks=False), args.repeats)
    trim_s = median_time(lambda i: edit_dataset(args.dataset, w / f"trim{i}", "trim",
                                                [str(episodes[0].index), "0", str(episodes[0].length // 2)]),
                         args.repeats)
    kept = frames - episodes[0].length
    rows = [("byte copy of the kept episodes (baseline)", copy_s, folder_bytes(w / "copy0")),
            ("hard links to the source's chunks (a view)", link_s, 0),
            ("sha256 of the source (provenance, once)", sha_s, 0),
            ("data edit drop 1 episode (chunk copy)", drop_s, folder_bytes(w / "drop0")),
            ("data edit drop 1 episode, all re-encoded", reencode_s, folder_bytes(w / "reenc0")),
            ("data edit trim 1 episode to half", trim_s, folder_bytes(w / "trim0"))]
    for name, seconds, size in rows:
        print(f"{name:45s} {seconds:7.2f} s  {kept / seconds:9.0f} frames/s  x{seconds / copy_s:5.2f}  "
              f"{size / 1e6:7.1f} MB written")
    for i in range(args.repeats):
        for kind in ("copy", "link", "drop", "reenc", "trim"):
            shutil.rmtree(w / f"{kind}{i}", ignore_errors=True)

    twin = w / "twin"
    shutil.copytree(args.dataset, twin)
    merge_s = median_time(lambda i: edit_dataset(args.dataset, w / f"merge{i}", "merge", [str(twin)]), args.repeats)
    print(f"{'data edit merge of two demo-sized datasets':45s} {merge_s:7.2f} s  {2 * frames / merge_s:9.0f} "
          f"frames/s  x{merge_s / copy_s:5.2f}  {folder_bytes(w / 'merge0') / 1e6:7.1f} MB written")
    for i in range(args.repeats):
        shutil.rmtree(w / f"merge{i}", ignore_errors=True)

    from drivelab.reports.dataset_view import build_view

    pages = []
    view_s = median_time(lambda i: pages.append(build_view(args.dataset, w / f"view{i}")), args.repeats)
    page = pages[0]
    print(f"{'data view (4 episodes as video, all listed)':45s} {view_s:7.2f} s  page {page.bytes / 1e6:.2f} MB "
          f"({page.episodes_shown} videos + index.html)")


if __name__ == "__main__":
    main()
