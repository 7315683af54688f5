"""The diagnosis as data, a reliance figure, a terminal table, and its files in the run folder.

The run folder keeps ``diagnosis/diagnosis_batch<N>.json`` and ``reliance_batch<N>.png``
(regenerable files, `drivelab.outputs.write_generated`) so the model card finds the verdict
without being told; a diagnosis on another split or dataset gets its own pair (`data_tag`), so
it never replaces the first. ``--json`` / ``--plot`` copies go wherever the user asks and never
clobber.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drivelab.config import load_config
from drivelab.config.diagnose_section import DiagnoseConfig
from drivelab.diagnose.closed_loop import ClosedLoopAB
from drivelab.diagnose.inertia import InertiaReport, InertiaTrack
from drivelab.diagnose.probe import CopyBaseline, ProbeResult
from drivelab.diagnose.reliance import Effect, GroupReliance, reliance_dict
from drivelab.diagnose.request import DiagnoseRequest
from drivelab.diagnose.verdict import Finding, verdict_dict, verdicts
from drivelab.outputs import check_generated, check_output, write_bytes, write_generated, write_json
from drivelab.runs.dataset_path import recorded_dataset
from drivelab.runs.folder import resolve_checkpoint

FOLDER = "diagnosis"
JSON_PREFIX, FIGURE_PREFIX = "diagnosis_", "reliance_"


@dataclass
class DiagnosisReport:
    run: str
    dataset: str
    split: str
    samples: int
    reliance: dict[str, list[GroupReliance]]
    probe: ProbeResult
    copies: dict[str, CopyBaseline]
    closed_loop: ClosedLoopAB | None
    inertia: InertiaReport | None
    verdicts: dict[str, list[Finding]]
    thresholds: DiagnoseConfig
    offline_seconds: float
    actions: list[str] = field(default_factory=list)  # the dataset's action names (history: last actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run, "dataset": self.dataset, "split": self.split, "samples": self.samples,
            "verdicts": verdict_dict(self.verdicts),
            "reliance": reliance_dict(self.reliance),
            "probe": asdict(self.probe),
            "copy_baseline": {k: asdict(v) for k, v in self.copies.items()},
            "closed_loop": None if self.closed_loop is None else asdict(self.closed_loop),
            "inertia": None if self.inertia is None else self.inertia.to_dict(),
            "thresholds": self.thresholds.model_dump(),
            "offline_seconds": round(self.offline_seconds, 2),
            "actions": self.actions,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any], thresholds: DiagnoseConfig | None = None) -> DiagnosisReport:
        """A saved diagnosis back as a report, its verdicts redrawn at ``thresholds`` (default: its own).

        The figures are what cost time; verdicts are cheap rules over them, so a threshold
        studied in `docs/diagnose.md` is applied to saved diagnoses without driving again.
        """
        config = thresholds or DiagnoseConfig(**record["thresholds"])
        reliance = {head: [GroupReliance(g["group"], Effect(**g["permuted"]), Effect(**g["mean"]), g["share"])
                           for g in groups] for head, groups in record["reliance"].items()}
        probe = ProbeResult(**record["probe"])
        copies = {head: CopyBaseline(**c) for head, c in record["copy_baseline"].items()}
        loop = record.get("closed_loop")
        ab = None if loop is None else ClosedLoopAB(**loop)
        saved = record.get("inertia")
        inertia = None if saved is None else InertiaReport([InertiaTrack(**t) for t in saved["tracks"]],
                                                           saved["seconds_per_track"])
        actions = list(record.get("actions", []))
        found = verdicts(reliance, copies, probe, set(actions), ab, inertia, config)
        return cls(record["run"], record["dataset"], record["split"], record["samples"], reliance, probe, copies,
                   ab, inertia, found, config, record["offline_seconds"], actions)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n"


def run_files(request: DiagnoseRequest) -> tuple[Path, Path]:
    """The diagnosis JSON and figure the run folder keeps for ``request`` (see `data_tag`)."""
    run, batch, _ = resolve_checkpoint(request.ref, request.runs_root)
    # the run's own dataset as recorded (absolute): data.path may be relative to another directory
    own = recorded_dataset(run).get("path") or load_config(run.config_path).data.path
    stem = f"batch{batch}{data_tag(request.split, request.dataset, own)}"
    folder = run.path / FOLDER
    return folder / f"{JSON_PREFIX}{stem}.json", folder / f"{FIGURE_PREFIX}{stem}.png"


def data_tag(split: str, dataset: str | Path | None, own: str | Path) -> str:
    """What tells one checkpoint's diagnoses apart: empty for its own dataset's ``val`` split
    (``diagnosis_batch<N>.json``), else ``_<split>`` and/or ``_<dataset name>-<6 hex of its
    path>``, so a diagnosis on other data is kept beside the first instead of replacing it."""
    parts = [] if split == "val" else [_slug(split)]
    if dataset is not None and Path(dataset).resolve() != Path(own).resolve():
        where = str(Path(dataset).resolve())
        parts.append(f"{_slug(Path(dataset).stem)}-{hashlib.sha256(where.encode()).hexdigest()[:6]}")
    return "".join(f"_{p}" for p in parts)


def _slug(text: str) -> str:
    """Letters, digits and dashes only, at most 24: a file-name part from a user's name."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:24] or "data"


def figure_path(json_path: Path) -> Path:
    """The reliance figure saved beside a run folder's diagnosis JSON."""
    return json_path.with_name(FIGURE_PREFIX + json_path.name.removeprefix(JSON_PREFIX)).with_suffix(".png")


def check_outputs(request: DiagnoseRequest) -> None:
    """Before any work: the run folder's files are regenerable, the user's files are new (or --force)."""
    for path in run_files(request):
        check_generated(path, "diagnosis", request.force)
    if request.json_out is not None:
        check_output(request.json_out, "--json", (".json",), request.force)
    if request.plot_out is not None:
        check_output(request.plot_out, "--plot", (".png",), request.force)


def reliance_png(report: DiagnosisReport) -> bytes:
    """One panel per head: each group's share of the loss rise when permuted, and its bootstrap bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = list(report.reliance)
    fig, axes = plt.subplots(1, len(heads), figsize=(4.2 * len(heads), 3.2), squeeze=False)
    for ax, head in zip(axes[0], heads, strict=True):
        groups = report.reliance[head]
        names = [g.group for g in groups]
        rises = [g.permuted.loss for g in groups]
        low = [max(g.permuted.loss - g.permuted.loss_low, 0.0) for g in groups]
        high = [max(g.permuted.loss_high - g.permuted.loss, 0.0) for g in groups]
        colours = ["tab:green" if n == "frames" else "tab:orange" for n in names]
        ax.bar(names, rises, yerr=[low, high], color=colours, capsize=3)
        ax.set_title(f"{head}: frames share {next((g.share for g in groups if g.group == 'frames'), 0):.0%}")
        ax.set_ylabel("loss rise when permuted")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{report.run}: input reliance on {report.split} ({report.samples} samples, 95 % bootstrap)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def save_report(report: DiagnosisReport, request: DiagnoseRequest) -> list[Path]:
    """The run folder's copy (always) and the user's ``--json`` / ``--plot`` (when asked)."""
    json_path, png_path = run_files(request)
    json_path.parent.mkdir(exist_ok=True)
    png = reliance_png(report)
    text = report.to_json()
    written = [write_generated(json_path, text, force=request.force, flag="diagnosis"),
               write_generated(png_path, png, force=request.force, flag="diagnosis")]
    if request.json_out is not None:
        written.append(write_json(request.json_out, report.to_dict(), force=request.force, flag="--json"))
    if request.plot_out is not None:
        written.append(write_bytes(request.plot_out, png, force=request.force, flag="--plot"))
    return written


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def render(console: Console, report: DiagnosisReport) -> None:
    """Reliance per head and group, the probe and copy baseline, closed loop, then the verdicts."""
    table = Table(title=escape(f"{report.run}: input reliance on {report.split} ({report.samples} samples)"))
    for col in ("head", "group", "Δloss permuted [95 %]", "ΔMAE permuted", "Δloss at mean", "share"):
        table.add_column(col, justify="left" if col in ("head", "group") else "right")
    for head, groups in report.reliance.items():
        for g in groups:
            p = g.permuted
            table.add_row(escape(head), escape(g.group), f"{p.loss:.4g} [{p.loss_low:.3g}, {p.loss_high:.3g}]",
                          f"{p.mae:.4g}", f"{g.mean.loss:.4g}", f"{g.share:.0%}")
    console.print(table)
    probe = report.probe
    for output in probe.outputs:
        copy = report.copies.get(output)
        console.print(f"{escape(output)}: last action decoded from joint features R² {_fmt(probe.joint_r2.get(output))}, "
                      f"from frame features R² {_fmt(probe.frames_r2.get(output))}; "
                      + ("" if copy is None else f"expert by copying R² {_fmt(copy.copy_r2)}, by the policy "
                         f"R² {_fmt(copy.policy_r2)}, policy by copying R² {_fmt(copy.policy_copy_r2)}"),
                      highlight=False, soft_wrap=True)
    if report.closed_loop is not None:
        ab = Table(title=f"closed loop on tracks {report.closed_loop.tracks[0]}-{report.closed_loop.tracks[-1]}")
        routes = any(a.get("success_rate") is not None for a in report.closed_loop.variants.values())
        columns = (("success", "crash/ep", "wrong/ep", "t-out/ep") if routes  # traffic: route outcomes
                   else ("reward", "completion", "off-track"))
        for col in ("variant", "score", *columns, "speed"):
            ab.add_column(col, justify="left" if col == "variant" else "right")
        for name, a in report.closed_loop.variants.items():
            cells = ([_fmt(a.get("success_rate"), ".0%"), _fmt(a.get("collisions_per_episode"), ".2f"),
                      _fmt(a.get("route_failures_per_episode"), ".2f"), _fmt(a.get("timeouts_per_episode"), ".2f")]
                     if routes else
                     [_fmt(a["reward_mean"], ".1f"), _fmt(a["completion_mean"]), _fmt(a["off_track_events_mean"], ".1f")])
            ab.add_row(escape(name), f"{_fmt(a['score_mean'])} ± {_fmt(a['score_std'])}", *cells,
                       _fmt(a["mean_speed_mean"], ".1f"))
        console.print(ab)
    for who, findings in report.verdicts.items():
        for f in findings:
            mark = "[red]FLAG[/]" if f.flagged else "[green]ok[/]"
            console.print(f"{mark} {escape(who)}: {escape(f.text)} ({f.figure} {f.value:.3g}, threshold {f.threshold:.3g})")
