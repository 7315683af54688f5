"""The card's pictures: loss curves per output, the architecture diagram, a small driving GIF.

Charles's pages show a Keras ``plot_model`` picture and a TensorBoard screenshot per model; here
both are drawn from the run's own files (config and ``metrics.jsonl``) with matplotlib's Agg
backend, so a card builds on a headless machine with nothing but the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from drivelab.media import read_mp4
from drivelab.outputs import generated_output
from drivelab.reports.events import Series, finite


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------ losses
def plot_losses(series: dict[str, Series], outputs: list[str], path: Path) -> list[str]:
    """One panel for the total loss and one per output: train (line) and validation (dots).

    Returns the panels drawn (an output with no logged loss is left out).
    """
    panels = [("loss", "total loss")] + [(f"{o}_loss", f"{o} loss") for o in outputs]
    panels = [(key, title) for key, title in panels if key in series or f"val/{key}" in series]
    if not panels:
        return []
    plt = _pyplot()
    columns = min(len(panels), 3)
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.3 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        if key in series:
            train = finite(series[key])
            ax.plot(train.steps, train.values, color="C0", linewidth=1.0, label="train")
        if f"val/{key}" in series:
            val = finite(series[f"val/{key}"])
            ax.plot(val.steps, val.values, color="C3", marker="o", markersize=3, linewidth=1.2, label="validation")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("batch")
        ax.set_ylabel(f"{title} (log scale)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.tight_layout()
    with generated_output(path, force=True, flag="card") as tmp:  # the card checked first
        figure.savefig(tmp, dpi=90)
    plt.close(figure)
    return [key for key, _ in panels]


# ------------------------------------------------------------------------------ architecture
@dataclass(frozen=True)
class Block:
    """One box of the diagram: a part of the policy."""

    key: str  # part name: backbone, history, recurrent, neck, heads.<output>
    title: str
    detail: str
    params: int | None = None
    frozen: bool = False
    init: str | None = None  # where its weights came from (init_from)


def architecture_blocks(
    config: Any, parts: dict[str, Any], frozen: set[str], init: dict[str, str]
) -> list[list[Block]]:
    """Columns of blocks, left to right: inputs, encoders, neck, [recurrent | temporal], heads."""
    model, data = config.model, config.data
    frames = f"{data.frames} x RGB {data.input_size[0]}x{data.input_size[1]}"
    inputs = [Block("frames", "frames", f"{frames}\n{data.normalization}")]
    encoders = [
        Block("backbone", f"backbone: {model.backbone.name}", f"pool {model.backbone.pool}"
              + ("\npretrained" if model.backbone.pretrained else ""),
              _params(parts, "backbone"), "backbone" in frozen, init.get("backbone"))
    ]
    history = model.history
    if history is not None:
        inputs.append(Block("signals", "telemetry history", f"{', '.join(history.signals)}\nlast {history.length} steps"))
        encoders.append(Block(
            "history", f"history: {history.kind}", f"{history.layers} x {history.width}, {history.output}",
            _params(parts, "history"), "history" in frozen, init.get("history"),
        ))
    command = getattr(model, "command", None)
    if command is not None:  # CIL: the route command joins the neck, or picks the head branch
        inputs.append(Block("command", f"command: {command.mode}", f"{command.signal}, {command.values} values"))
    speed = getattr(model, "speed_head", None)
    if speed is not None:  # CILRS: speed predicted from the frames' features (training only)
        encoders.append(Block("speed_head", "speed head (aux)", f"weight {speed.weight}",
                              _params(parts, "speed_head"), "speed_head" in frozen, init.get("speed_head")))
    columns = [inputs, encoders]
    recurrent = getattr(model, "recurrent", None)
    neck_detail = "Dense " + "-".join(map(str, model.neck)) if model.neck else "concatenate"
    columns.append([Block("neck", "neck", neck_detail, _params(parts, "neck"), "neck" in frozen, init.get("neck"))])
    if recurrent is not None:
        columns.append([Block("recurrent", "recurrent: LSTM", f"{recurrent.layers} x {recurrent.hidden}",
                              _params(parts, "recurrent"), "recurrent" in frozen, init.get("recurrent"))])
    transformer = getattr(model, "transformer", None)
    if transformer is not None:  # the temporal transformer kind: attention over the last K steps
        columns.append([Block("temporal", "temporal: transformer", f"last {transformer.window} steps\n"
                              f"{transformer.layers} x {transformer.width}, {transformer.heads} heads",
                              _params(parts, "temporal"), "temporal" in frozen, init.get("temporal"))])
    heads = []
    for head in model.heads:
        key = f"heads.{head.output}"
        widths = head.widths if isinstance(head.widths, str) else "-".join(map(str, head.widths))
        out = f"{len(head.bins.values())} bins" if head.kind == "classification" and head.bins else "1"
        branched = ""
        if command is not None and command.mode == "branched":  # one head stack per command value
            each = _params(parts, f"{key}.branches.0")
            branched = f"\n{command.values} branches" + (f" x {each:,}" if each is not None else "")
        heads.append(Block(key, f"{head.output}", f"{head.kind}: {widths} -> {out}\nloss {head.loss}{branched}",
                           _params(parts, key), key in frozen, init.get(key)))
    columns.append(heads)
    return columns


def _params(parts: dict[str, Any], key: str) -> int | None:
    counts = parts.get(key)
    return None if counts is None else int(counts.total)


def draw_architecture(columns: list[list[Block]], path: Path) -> None:
    """Boxes per column joined by arrows; frozen parts hatched grey, transferred ones outlined."""
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    tallest = max(len(c) for c in columns)
    width, height = 2.6 * len(columns), max(2.4, 1.5 * tallest)
    figure, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, len(columns))
    ax.set_ylim(-0.25, tallest)  # room below the boxes for the key
    ax.axis("off")
    box_w, box_h = 0.82, 0.78
    centres: list[list[tuple[float, float]]] = []
    for ci, column in enumerate(columns):
        placed = []
        for bi, block in enumerate(column):
            cx = ci + 0.5
            cy = tallest / 2 + (len(column) - 1) / 2 - bi
            face = "#e6e6e6" if block.frozen else ("#dbe9f6" if block.key not in ("frames", "signals") else "#fff4d6")
            patch = FancyBboxPatch(
                (cx - box_w / 2, cy - box_h / 2), box_w, box_h, boxstyle="round,pad=0.02",
                facecolor=face, edgecolor="#c0392b" if block.init else "#445",
                linewidth=2.0 if block.init else 1.0, hatch="//" if block.frozen else None,
            )
            ax.add_patch(patch)
            lines = [block.detail]
            if block.params is not None:
                lines.append(f"{block.params:,} params")
            if block.frozen:
                lines.append("frozen")
            if block.init:
                lines.append(f"init: {block.init}")
            # text on a frozen (hatched) box gets a light backing so it stays readable
            backing = {"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1.5} if block.frozen else None
            ax.text(cx, cy + box_h / 2 - 0.1, block.title, ha="center", va="top", fontsize=8.5, weight="bold",
                    bbox=backing)
            ax.text(cx, cy - 0.06, "\n".join(lines), ha="center", va="center", fontsize=7, linespacing=1.25,
                    bbox=backing)
            placed.append((cx, cy))
        centres.append(placed)
    for left, right in pairwise(centres):
        for index, (x0, y0) in enumerate(left):
            targets = right if len(right) == 1 or len(left) == 1 else [right[min(index, len(right) - 1)]]
            for x1, y1 in targets:
                ax.add_patch(FancyArrowPatch((x0 + box_w / 2, y0), (x1 - box_w / 2, y1),
                                             arrowstyle="-|>", mutation_scale=10, color="#555"))
    keys = [text for flag, text in ((any(b.frozen for c in columns for b in c), "hatched: frozen"),
                                     (any(b.init for c in columns for b in c), "red outline: weights from init_from"))
            if flag]
    if keys:
        ax.text(0.05, -0.18, "   ".join(keys), fontsize=7, color="#555")
    figure.tight_layout()
    with generated_output(path, force=True, flag="card") as tmp:  # the card checked first
        figure.savefig(tmp, dpi=90)
    plt.close(figure)


def architecture_text(columns: list[list[Block]]) -> str:
    """The same diagram as one text line per column, for terminals and plain Markdown."""
    lines = []
    for column in columns:
        parts = []
        for block in column:
            extra = [block.detail.replace("\n", ", ")]
            if block.params is not None:
                extra.append(f"{block.params:,} params")
            if block.frozen:
                extra.append("frozen")
            if block.init:
                extra.append(f"init {block.init}")
            parts.append(f"[{block.title}: {'; '.join(extra)}]")
        lines.append("  ".join(parts))
    return "\n   |\n   v\n".join(lines)


# ------------------------------------------------------------------------------ GIF
def shrink_gif(source: Path, target: Path, max_bytes: int = 1_500_000) -> Path:
    """A driving GIF from a GIF or MP4, dropping frames and pixels until it fits ``max_bytes``.

    An evaluation GIF of a whole lap is several MB; a card (and its HTML twin, base64-inflated)
    should stay light. Playback speed is kept by stretching each remaining frame's duration.
    """
    if source.suffix == ".mp4":  # evaluation and watch videos: decoded, then made a GIF here
        arrays, fps = read_mp4(source)
        frames = [Image.fromarray(a) for a in arrays]
        durations = [round(1000 / fps)] * len(frames)
    else:
        with Image.open(source) as gif:
            frames, durations = [], []
            try:
                while True:
                    frames.append(gif.convert("RGB"))
                    durations.append(int(gif.info.get("duration", 40)))
                    gif.seek(gif.tell() + 1)
            except EOFError:
                pass
    target.parent.mkdir(parents=True, exist_ok=True)
    with generated_output(target, force=True, flag="card") as staged:  # the card checked first
        _save_within(frames, durations, staged, max_bytes)
    return target


def _save_within(frames: list[Image.Image], durations: list[int], target: Path, max_bytes: int) -> None:
    """Save ``frames`` as a GIF at the first frame step / scale that fits ``max_bytes``."""
    # fewer frames first (the lap stays whole, at a lower frame rate; the overlay's numbers stay
    # legible), then fewer pixels
    for step, scale in ((1, 1.0), (2, 1.0), (4, 1.0), (6, 1.0), (8, 1.0), (8, 0.75), (12, 0.75),
                        (16, 0.5), (32, 0.5)):
        kept = frames[::step]
        size = (max(8, int(kept[0].width * scale)), max(8, int(kept[0].height * scale)))
        out = [f.resize(size, Image.NEAREST).convert("P", palette=Image.ADAPTIVE, colors=64) for f in kept]
        duration = int(np.mean(durations)) * step
        out[0].save(target, save_all=True, append_images=out[1:], duration=duration, loop=0)
        if target.stat().st_size <= max_bytes:
            break
