"""`drivelab compare`: one figure per tag with a curve per run (kkelchte's ``combine_results``).

Sources are drivelab runs and TensorBoard log folders alike (`drivelab.reports.events`), so a new
run can be drawn over one of Charles's Keras logs. Options follow combine_results: legend names,
``subsample`` (every K-th point, for long noisy logs), ``cut_end`` (stop every curve at a step,
to compare runs on the same budget), plus TensorBoard-style EMA ``smooth`` (the raw curve stays
visible, faint, so smoothing never hides a spike).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivelab.outputs import atomic_output, check_output
from drivelab.reports.events import ReportError, Series, Source, find_tag, finite


@dataclass(frozen=True)
class CompareOptions:
    tags: tuple[str, ...]
    legend: tuple[str, ...] | None = None
    subsample: int = 1
    cut_end: int | None = None
    smooth: float = 0.0
    title: str | None = None
    log_y: bool = False

    def check(self, sources: int) -> None:
        if not self.tags or any(not t for t in self.tags):
            raise ReportError("--tags needs at least one tag name, e.g. --tags loss,steering_loss")
        if self.legend is not None and len(self.legend) != sources:
            raise ReportError(
                f"--legend has {len(self.legend)} name(s) for {sources} source(s): give one per source"
            )
        if self.subsample < 1:
            raise ReportError(f"--subsample must be at least 1 (got {self.subsample})")
        if self.cut_end is not None and self.cut_end < 0:
            raise ReportError(f"--cut-end must be a step >= 0 (got {self.cut_end})")
        if not 0.0 <= self.smooth < 1.0:
            raise ReportError(f"--smooth must be in [0, 1) (got {self.smooth})")


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average (weight 0 returns the values)."""
    if weight <= 0 or values.size == 0:
        return values.copy()
    out = np.empty_like(values, dtype=np.float64)
    last, debias = 0.0, 0.0
    for i, value in enumerate(values):
        last = last * weight + (1 - weight) * value
        debias = debias * weight + (1 - weight)
        out[i] = last / debias
    return out


def prepare(series: Series, options: CompareOptions) -> Series:
    """Finite points, cut at ``cut_end``, every ``subsample``-th point kept."""
    clean = finite(series)
    steps, values = clean.steps, clean.values
    if options.cut_end is not None:
        keep = steps <= options.cut_end
        steps, values = steps[keep], values[keep]
    return Series(series.tag, steps[:: options.subsample], values[:: options.subsample])


def collect_curves(
    sources: Sequence[Source], options: CompareOptions
) -> dict[str, list[tuple[str, Series]]]:
    """tag -> [(legend name, curve)] for every requested tag in every source (all or an error)."""
    options.check(len(sources))
    names = list(options.legend) if options.legend else _unique_labels(sources)
    read = [source.read() for source in sources]
    for source, series in zip(sources, read, strict=True):
        if not series:
            raise ReportError(f"{source.path} holds no scalar curves (no metrics rows or scalar summaries)")
    curves: dict[str, list[tuple[str, Series]]] = {}
    for tag in options.tags:
        for name, source, series in zip(names, sources, read, strict=True):
            found = prepare(find_tag(series, tag, str(source.path)), options)
            if not len(found):
                raise ReportError(f"tag {tag!r} of {source.path} has no points left (check --cut-end)")
            curves.setdefault(tag, []).append((name, found))
    return curves


def _unique_labels(sources: Sequence[Source]) -> list[str]:
    """Default legend names, unique: identical names get as many parent folders in front as
    tell them apart (``runs_a/line/line_v1`` vs ``runs_b/line/line_v1``), else a ``#n``."""
    labels = [s.label for s in sources]
    for depth in range(1, 6):
        if len(set(labels)) == len(labels):
            return labels
        labels = ["/".join([*s.path.parts[-depth - 1:-1], s.label]) for s in sources]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:  # the same folder given twice: still two legend entries
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return unique


def tag_filename(out: Path, tag: str, several: bool) -> Path:
    """``out`` itself for one tag; ``<stem>_<tag>.png`` per tag for several."""
    if not several:
        return out
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).strip("_")
    return out.with_name(f"{out.stem}_{safe}{out.suffix or '.png'}")


def plot_compare(
    curves: dict[str, list[tuple[str, Series]]], options: CompareOptions, out: Path, panels: bool = False,
    force: bool = False,
) -> list[Path]:
    """Write the figures: one PNG per tag, or with ``panels`` one PNG with a panel per tag.

    Every file name is checked before the first is drawn, so a clash costs nothing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    tags = list(curves)
    targets = [out] if panels else [tag_filename(out, tag, several=len(tags) > 1) for tag in tags]
    for target in targets:
        check_output(target, "--out", (".png",), force=force)
    if panels:
        columns = min(len(tags), 2)
        rows = (len(tags) + columns - 1) // columns
        figure, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.0 * rows), squeeze=False)
        for ax, tag in zip(axes.flat, tags, strict=False):
            _draw(ax, tag, curves[tag], options)
        for ax in list(axes.flat)[len(tags):]:
            ax.set_visible(False)
        if options.title:
            figure.suptitle(options.title)
        figure.tight_layout()
        with atomic_output(out, force=force, flag="--out") as tmp:
            figure.savefig(tmp, dpi=100)
        plt.close(figure)
        return [out]
    for tag in tags:
        figure, ax = plt.subplots(figsize=(7.0, 4.2))
        _draw(ax, tag, curves[tag], options)
        if options.title:
            figure.suptitle(options.title)
        figure.tight_layout()
        path = tag_filename(out, tag, several=len(tags) > 1)
        with atomic_output(path, force=force, flag="--out") as tmp:
            figure.savefig(tmp, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def _draw(ax: object, tag: str, lines: list[tuple[str, Series]], options: CompareOptions) -> None:
    for index, (name, series) in enumerate(lines):
        colour = f"C{index % 10}"
        if options.smooth > 0:
            ax.plot(series.steps, series.values, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(series.steps, ema(series.values, options.smooth), color=colour, label=name, linewidth=1.6)
        else:
            marker = "o" if len(series) < 30 else None
            ax.plot(series.steps, series.values, color=colour, label=name, linewidth=1.4, marker=marker, markersize=3)
    shown = {s.tag for _, s in lines}
    ax.set_title(tag if shown == {tag} else f"{tag}  ({', '.join(sorted(shown))})", fontsize=10)
    if options.log_y:
        ax.set_yscale("log")
    ax.set_xlabel("batch (step)")
    ax.set_ylabel(tag)
    ax.grid(True, alpha=0.3, which="both" if options.log_y else "major")
    ax.legend(fontsize=8)
