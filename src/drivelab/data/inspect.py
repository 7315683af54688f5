"""Looking into a dataset: summary numbers, action histograms, and a full integrity check."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from drivelab.data.array_checks import array_problems
from drivelab.data.records import (
    EPISODES,
    SPLITS,
    DatasetError,
    EpisodeInfo,
    episode_name,
    expected_arrays,
)
from drivelab.data.store import DatasetStore
from drivelab.outputs import atomic_output


def dataset_info(store: DatasetStore) -> dict[str, Any]:
    """The numbers `drivelab data info` shows, as plain JSON-able data. Reads no frames.

    The statistics come from the per-episode moments taken at commit time; the signals
    themselves (small: frames are uint8 and cannot hold NaN) are scanned for NaN/Inf, since a
    value damaged after the commit would not show in those moments.
    """
    episodes, _, damaged = store.scan()
    moments = store.moments(episodes)
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        members = [e for e in episodes if store.split_of(e.index) == split]
        splits[split] = {
            "episodes": len(members),
            "frames": sum(e.length for e in members),
            "indices": [e.index for e in members],
        }
    signals: dict[str, dict[str, Any]] = {"telemetry": {}, "actions": {}}
    for kind, specs in (("telemetry", store.meta.telemetry), ("actions", store.meta.actions)):
        for spec in specs:
            m = moments.get(f"{kind}/{spec.name}")
            entry: dict[str, Any] = {"unit": spec.unit, "size": spec.size}
            if m is not None:
                entry.update(m.summary())
            entry["nonfinite"] = 0
            signals[kind][spec.name] = entry
    nonfinite = count_nonfinite(store, episodes)
    for key, count in nonfinite["per_signal"].items():
        kind, _, name = key.partition("/")
        if kind in signals and name in signals[kind]:
            signals[kind][name]["nonfinite"] = count
    frame_stats = None
    if "frames" in moments:
        fm = moments["frames"]
        frame_stats = {
            "mean": [v / 255.0 for v in fm.mean],
            "std": [v / 255.0 for v in fm.std],
            "scale": "per channel, pixel values divided by 255",
        }
    attrs = store.attrs
    return {
        "path": str(store.path),
        "format": attrs["format"],
        "version": attrs["version"],
        "env_id": store.meta.env_id,
        "fps": store.meta.fps,
        "frame_shape": list(store.meta.frame_shape),
        "episodes": len(episodes),
        "frames": sum(e.length for e in episodes),
        "splits": splits,
        "signals": signals,
        "frame_stats": frame_stats,
        "leftovers": store.leftovers(),
        "writer_active": store.writer_active(),
        "damaged": [{"path": d.path, "reason": d.reason} for d in damaged],
        "nonfinite": nonfinite,
        "edits": attrs.get("edits", []),
        "episode_rows": [
            {
                "index": e.index,
                "split": store.split_of(e.index),
                "length": e.length,
                "track_seed": e.attrs.get("track_seed"),
                "return": e.attrs.get("return"),
                "progress": e.attrs.get("progress"),
                "perturbed_steps": e.attrs.get("perturbed_steps"),
                "unstuck_count": e.attrs.get("unstuck_count"),
            }
            for e in episodes
        ],
    }


def episode_source(attrs: dict, dataset_source: str = "") -> str:
    """Where an episode came from, as a user would name it (`data view`, the live loop's summary)."""
    driver = attrs.get("live_driver")
    if driver in ("policy", "mixed"):
        return "policy-driven from live/dagger"
    if driver == "expert":
        return "expert-driven from live/dagger"
    source = str(attrs.get("source") or dataset_source)
    return f"imported from {source[:40]}" if source else "expert-driven from collect"


def count_nonfinite(store: DatasetStore, episodes: list[EpisodeInfo]) -> dict[str, Any]:
    """NaN/Inf values in the float arrays (signals and reward) of ``episodes``.

    ``values`` in all, ``per_signal`` (``telemetry/speed``, ``reward``, ...: count),
    ``episodes`` holding any, and ``unreadable``: arrays that could not be decoded (one line
    each; `drivelab data verify` tells more).
    """
    keys = [s.key for s in expected_arrays(store.meta) if s.dtype == "float32"]
    per_signal: dict[str, int] = {}
    bad_episodes: list[int] = []
    unreadable: list[str] = []
    for e in episodes:
        found = 0
        for key in keys:
            try:
                values = store.read_array(e.index, key)
            except DatasetError:
                unreadable.append(f"episode {e.name}: {key}")
                continue
            n = int(values.size - np.count_nonzero(np.isfinite(values)))
            if n:
                per_signal[key] = per_signal.get(key, 0) + n
                found += n
        if found:
            bad_episodes.append(e.index)
    return {
        "values": sum(per_signal.values()),
        "per_signal": per_signal,
        "episodes": bad_episodes,
        "unreadable": unreadable,
    }


def read_signal(store: DatasetStore, kind: str, name: str) -> np.ndarray:
    """One signal over all committed episodes, concatenated ([N, size])."""
    parts = [store.read_array(e.index, f"{kind}/{name}") for e in store.episodes()]
    if not parts:
        return np.zeros((0, 1), np.float32)
    return np.concatenate(parts)


def plot_histograms(store: DatasetStore, out: str | Path, bins: int = 41, force: bool = False) -> Path:
    """Per-output histograms (what the Charles team judged balancing by), plus speed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, np.ndarray, str, tuple[float, float] | None]] = []
    for spec in store.meta.actions:
        values = read_signal(store, "actions", spec.name)
        bounds = (spec.low, spec.high) if spec.low is not None and spec.high is not None else None
        for col in range(spec.size):
            label = spec.name if spec.size == 1 else f"{spec.name}[{col}]"
            panels.append((label, values[:, col], "label", bounds))
    if any(s.name == "speed" for s in store.meta.telemetry):
        panels.append(("speed", read_signal(store, "telemetry", "speed")[:, 0], "telemetry", None))
    command = next((s for s in store.meta.telemetry if s.name == "command"), None)
    fig, axes = plt.subplots(1, len(panels) + (command is not None),
                             figsize=(4.2 * (len(panels) + (command is not None)), 3.4), squeeze=False)
    for ax, (label, values, kind, bounds) in zip(axes[0], panels, strict=False):
        # over the action's full range, so unused parts of it (empty bins) show as such
        ax.hist(values, bins=bins, range=bounds, color="#3a7ca5", edgecolor="white", linewidth=0.4)
        ax.set_yscale("log")
        ax.set_title(f"{label} ({kind})")
        ax.set_xlabel(label)
        ax.set_ylabel("frames (log)")
        ax.grid(alpha=0.3)
    if command is not None:
        _command_bars(axes[0][-1], command, read_signal(store, "telemetry", "command"))
    n = sum(e.length for e in store.episodes())
    fig.suptitle(f"{store.path.name}: {n} frames, {len(store.episodes())} episodes")
    fig.tight_layout()
    out = Path(out)
    with atomic_output(out, force=force, flag="--plot") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out


def _command_bars(ax: Any, spec: Any, one_hot: np.ndarray) -> None:
    """Frames per route command (the traffic world's one-hot): a policy sees only the commands
    its data holds, so a missing exit shows here before training, like an unused steering bin."""
    described = (spec.description or "").partition(":")[2].split(",")
    names = [n.strip() for n in described if n.strip()]
    if len(names) != spec.size:
        names = [str(i) for i in range(spec.size)]
    counts = np.bincount(np.argmax(one_hot, axis=1), minlength=spec.size) if len(one_hot) else np.zeros(spec.size)
    ax.bar(names, counts, color="#3a7ca5", edgecolor="white")
    ax.set_title("command (telemetry, one-hot)")
    ax.set_ylabel("frames")
    ax.grid(alpha=0.3, axis="y")


@dataclass
class VerifyReport:
    episodes: int = 0
    frames: int = 0
    problems: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # episode groups with unreadable metadata
    foreign: list[str] = field(default_factory=list)  # _staging entries the store did not make
    writer_active: bool = False  # a collector holds the lock: leftovers are work in progress
    nonfinite: int = 0  # NaN/Inf values found in the float arrays
    warnings: list[str] = field(default_factory=list)  # odd but not damage: exit 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_dataset(store: DatasetStore) -> VerifyReport:
    """Read every committed episode in full and check shapes, dtypes, finiteness and length.

    Episode groups whose own metadata cannot be read are problems (they may be committed
    episodes), never leftovers; see `DatasetStore.leftovers` for what may be deleted.
    """
    report = VerifyReport(
        writer_active=store.writer_active(),
        leftovers=store.leftovers(),
        foreign=store.foreign_staging(),
    )
    for group in store.damaged():
        report.damaged.append(group.path)
        report.problems.append(
            f"{group.path} is damaged: {group.reason}; it may hold a committed episode, so it is "
            "kept (restore it from a backup, or move the folder out of episodes/ to use the rest)"
        )
    _verify_listing(store, report)
    specs = expected_arrays(store.meta)
    for info in store.episodes():
        name = episode_name(info.index)
        report.episodes += 1
        report.frames += info.length
        bad_meta = array_problems(store, info, specs)
        report.problems += [f"episode {name}: {text}" for _, text in bad_meta]
        broken = {key for key, _ in bad_meta}
        for spec in specs:
            if spec.key in broken or spec.key.rpartition("/")[0] in broken:
                continue  # reported above; its chunks cannot be trusted to decode
            _verify_array(store, info.index, info.length, spec.key, report)
    return report


def _verify_listing(store: DatasetStore, report: VerifyReport) -> None:
    """The episodes group itself, and episodes the root attrs name that are not there.

    A missing ``episodes/zarr.json`` is damage. Episodes named by a split or counted by the last
    collect but gone are only warned about: moving a damaged group out of ``episodes/`` is what
    the user is told to do, and that must not fail every later verify.
    """
    if not (store.path / EPISODES / "zarr.json").is_file():
        report.problems.append(f"{EPISODES}/zarr.json is missing: the episodes group is damaged")
    present = {e.index for e in store.episodes()} | {int(d.path.rsplit("/", 1)[1]) for d in store.damaged()}
    for split, members in store.attrs.get("splits", {}).items():
        gone = sorted(set(members) - present)
        if gone:
            report.warnings.append(
                f"the {split} split names episode(s) {', '.join(map(episode_name, gone))}, which "
                f"are not in {EPISODES}/ (removed or moved away?)"
            )
    recorded = store.attrs.get("episodes")
    if isinstance(recorded, int) and recorded > len(present):
        report.warnings.append(
            f"the last collect recorded {recorded} committed episodes, {len(present)} are "
            f"there now (removed or moved away?)"
        )


def _verify_array(store: DatasetStore, index: int, length: int, key: str, report: VerifyReport) -> None:
    """Decode one array chunk by chunk, recording the first unreadable chunk and NaN/Inf values."""
    name = episode_name(index)
    try:
        arr = zarr.open_array(str(store.path / EPISODES / name / key), mode="r")
    except Exception as exc:  # metadata looked right but zarr still refuses it
        report.problems.append(f"episode {name}: {key} cannot be opened ({type(exc).__name__}: {exc})")
        return
    step = max(1, int(arr.chunks[0]))
    nonfinite = 0
    for start in range(0, max(length, 1), step):
        try:
            block = arr[start : start + step]
        except Exception as exc:
            report.problems.append(
                f"episode {name}: {key} steps {start}..{min(start + step, length) - 1} unreadable "
                f"({type(exc).__name__}: {exc})"
            )
            break
        if block.dtype.kind == "f":
            nonfinite += int(block.size - np.count_nonzero(np.isfinite(block)))
    if nonfinite:
        report.nonfinite += nonfinite
        report.problems.append(f"episode {name}: {key} holds NaN/Inf values ({nonfinite})")
