"""The specifications table as text: Markdown (like the seed's), CSV and JSON.

One column list serves every format, so the printed table, the Markdown file and the CSV never
disagree about what a column is. The JSON keeps the raw numbers (bytes, FLOPs, rates) with the
plan and the machine they were measured on.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch

from drivelab.machine import cpu_model
from drivelab.models.specs import BackboneSpecs, SpecsPlan

__all__ = ["COLUMNS", "CONSOLE_COLUMNS", "console_table", "describe", "headers", "machine", "table_rows", "to_csv", "to_json", "to_markdown"]

MB = 1024 * 1024


def _rate(key: str) -> Callable[[BackboneSpecs], str]:
    def cell(row: BackboneSpecs) -> str:
        value = row.rates.get(key)
        return "-" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"

    return cell


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.1f}"


#: (header, cell) per column; "B" in a header stands for the plan's batch.
COLUMNS: tuple[tuple[str, Callable[[BackboneSpecs], str]], ...] = (
    ("network", lambda r: r.network),
    ("model", lambda r: r.model),
    ("feature layers", lambda r: str(r.feature_layers)),
    ("decision layers", lambda r: str(r.decision_layers)),
    ("parameters", lambda r: f"{r.params:,}"),
    ("trainable", lambda r: f"{r.trainable:,}"),
    ("Keras count", lambda r: f"{r.keras_params:,}"),
    ("features", lambda r: str(r.num_features)),
    ("GFLOPs/sample", lambda r: f"{r.flops / 1e9:.3g}"),
    ("weights MB", lambda r: _mb(r.weight_bytes)),
    ("activations MB @B", lambda r: _mb(r.activation_bytes)),
    ("CPU 1 thread fps b1", _rate("cpu1_b1")),
    ("CPU 1 thread fps bB", _rate("cpu1_bB")),
    ("CPU all threads fps b1", _rate("cpu_all_b1")),
    ("CPU all threads fps bB", _rate("cpu_all_bB")),
    ("GPU fps b1", _rate("gpu_b1")),
    ("GPU fps bB", _rate("gpu_bB")),
    ("GPU peak MB @B", lambda r: _mb(r.gpu_peak_bytes)),
)


#: The terminal's narrower view: layers as feature/decision, parameters in millions, rates only
#: for what was measured. Files get every column of `COLUMNS`.
CONSOLE_COLUMNS: tuple[tuple[str, Callable[[BackboneSpecs], str]], ...] = (
    ("network", lambda r: r.network),
    ("layers", lambda r: f"{r.feature_layers}/{r.decision_layers}"),
    ("params", lambda r: f"{r.params / 1e6:.2f}M"),
    ("GFLOPs", lambda r: f"{r.flops / 1e9:.3g}"),
    ("act MB", lambda r: _mb(r.activation_bytes)),
    ("1T b1", _rate("cpu1_b1")),
    ("1T bB", _rate("cpu1_bB")),
    ("nT b1", _rate("cpu_all_b1")),
    ("nT bB", _rate("cpu_all_bB")),
    ("GPU b1", _rate("gpu_b1")),
    ("GPU bB", _rate("gpu_bB")),
)


def console_table(rows: Sequence[BackboneSpecs], plan: SpecsPlan) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) for the terminal; the GPU columns only when a GPU was measured."""
    columns = [c for c in CONSOLE_COLUMNS
               if not c[0].startswith("GPU") or any(r.rates.get("gpu_b1") is not None for r in rows)]
    head = [f"{h[:-1]}{plan.batch}" if h.endswith("bB") else h for h, _ in columns]
    return head, [[cell(row) for _, cell in columns] for row in rows]


def machine() -> dict[str, object]:
    """What the rates were measured on: CPU model and threads, GPU, torch version, and the
    1-minute load average (ours included): on a shared machine it says how far to trust them."""
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "threads": torch.get_num_threads(), "gpu": gpu, "torch": torch.__version__,
            "load": load}


def headers(plan: SpecsPlan) -> list[str]:
    """Column headers with the batch written out (``fps b16``, ``MB @16``)."""
    return [f"{header[:-1]}{plan.batch}" if header.endswith(("bB", "@B")) else header
            for header, _ in COLUMNS]


def table_rows(rows: Sequence[BackboneSpecs]) -> list[list[str]]:
    return [[cell(row) for _, cell in COLUMNS] for row in rows]


def describe(plan: SpecsPlan, host: dict[str, object]) -> str:
    """One sentence saying what was measured and where."""
    height, width = plan.input_size
    gpu = host["gpu"] or "no GPU"
    return (
        f"Input {height}x{width}, {plan.frames} frame(s) per sample, batch B = {plan.batch}; "
        f"median of {plan.repeats} timed forwards after {plan.warmup} warm-up; CPU {host['cpu']} "
        f"({host['threads']} threads, load {host['load']}), {gpu}; torch {host['torch']}."
    )


def to_markdown(rows: Sequence[BackboneSpecs], plan: SpecsPlan, host: dict[str, object]) -> str:
    head = headers(plan)
    right = {i for i, h in enumerate(head) if h not in ("network", "model")}
    lines = [describe(plan, host), "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[BackboneSpecs], plan: SpecsPlan) -> str:
    """Raw numbers, one row per network (rates in samples per second, sizes in bytes)."""
    buffer = io.StringIO()
    records = [_flat(row) for row in rows]
    keys = list(records[0]) if records else []
    writer = csv.DictWriter(buffer, fieldnames=["input_h", "input_w", "frames", "batch", *keys],
                            lineterminator="\n")
    writer.writeheader()
    height, width = plan.input_size
    for record in records:
        writer.writerow({"input_h": height, "input_w": width, "frames": plan.frames,
                         "batch": plan.batch, **record})
    return buffer.getvalue()


def _flat(row: BackboneSpecs) -> dict[str, object]:
    record = row.as_dict()
    rates = record.pop("rates")
    return {**record, **{f"fps_{key}": value for key, value in rates.items()}}


def to_json(rows: Sequence[BackboneSpecs], plan: SpecsPlan, host: dict[str, object]) -> str:
    data = {"plan": asdict(plan), "machine": host, "rows": [row.as_dict() for row in rows]}
    return json.dumps(data, indent=2) + "\n"
