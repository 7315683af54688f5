"""What `drivelab diagnose` is asked to do: one plain record shared by the job and its report files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from drivelab.seeds import HELD_OUT_SEED


@dataclass
class DiagnoseRequest:
    """What to diagnose and how far: ``tracks=0`` skips the closed-loop A/B and the inertia test."""

    ref: str
    runs_root: Path = Path("runs")
    split: str = "val"
    dataset: Path | None = None
    tracks: int = 5
    seed: int = HELD_OUT_SEED
    max_steps: int = 1000
    inertia_tracks: int | None = None  # default: the same tracks
    workers: int = 1
    device: str | None = None
    thresholds: list[str] = field(default_factory=list)  # diagnose.<key>=value overrides
    json_out: Path | None = None
    plot_out: Path | None = None
    force: bool = False
