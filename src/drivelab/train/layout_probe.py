"""``channels_last: auto`` decided by timing both memory formats on this machine, cached.

Why a probe and not a rule: whether NHWC beats NCHW depends on the CPU kind, the precision,
the backbone *and* the input size. On one Zen 4 EPYC (docs/results.md) fp32 NHWC ran 0.88x of
NCHW for PilotNet at 96x96 x 64 but 1.12x at 64x64 x 32; bf16 NHWC was faster at both. No rule
over (device, precision) holds across that, a few timed steps of the run's own backbone do.

The probe times forward + backward of a copy of the backbone (the only part the memory format
changes) on a synthetic batch of the run's shape, both formats alternated, and keeps the faster
one only when it wins by more than `MARGIN`; otherwise the rule in `auto_channels_last` stands,
so noise cannot flip a decision. The verdict is cached per machine (CPU or GPU model, torch,
threads, precision, backbone, batch shape) in ``$XDG_CACHE_HOME/drivelab/layout_probe.json``,
so a machine probes a shape once, and a run that resumes reuses its recorded choice instead.
The cache is machine state like torch's own kernel caches, not a verb's output: it is
replaced whole (`outputs.write_json`, forced) and a cache that cannot be read or written only
costs a probe.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from drivelab.machine import cpu_summary
from drivelab.outputs import OutputError, write_json

#: The faster format must win by this much to replace the rule's choice (noise is ~2-3 %).
MARGIN = 0.04
#: Timed steps per format are fitted to about this many seconds in all (at least 3 each).
BUDGET_S = 1.5
MAX_REPEATS = 9
CACHE_NAME = "layout_probe.json"


@dataclass(frozen=True)
class LayoutVerdict:
    """What the probe found: NHWC's speed relative to NCHW (>1: NHWC faster), and the choice."""

    channels_last: bool
    speedup: float
    cached: bool

    def note(self, precision: str, shape: tuple[int, ...]) -> str:
        where = "cached probe" if self.cached else "probe"
        size = "x".join(map(str, shape))
        return (f"channels_last: auto -> {'on' if self.channels_last else 'off'} ({where}: NHWC "
                f"{self.speedup:.2f}x NCHW for this backbone at {size} in {precision})")


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/drivelab/layout_probe.json`` (``~/.cache`` without the variable)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "drivelab" / CACHE_NAME


def machine_name(device: str) -> str:
    """The processor a verdict holds for: the GPU's name, or the CPU model and its ISA level."""
    if device == "cuda":
        return f"cuda:{torch.cuda.get_device_name()}"
    return f"cpu:{cpu_summary()}"


def probe_key(backbone: torch.nn.Module, shape: tuple[int, ...], precision: str, device: str) -> str:
    parameters = sum(p.numel() for p in backbone.parameters())
    return "|".join([machine_name(device), f"torch {torch.__version__}", f"threads {torch.get_num_threads()}",
                     precision, f"{type(backbone).__name__}/{parameters}", "x".join(map(str, shape))])


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, speedup: float) -> None:
    """Add one verdict: re-read, merge, replace atomically (a concurrent run may have added one)."""
    entries = _read_cache(path)
    entries[key] = {"nhwc_speedup": round(speedup, 4), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    # replacing is this file's purpose (force), through the one atomic writer; an unwritable
    # cache costs a probe next time, nothing else
    with contextlib.suppress(OutputError, OSError):
        write_json(path, entries, force=True, flag="the layout probe's cache")


def _arithmetic(precision: str, device: str) -> tuple[torch.dtype, Callable[[], Any]]:
    """The weights' dtype and the autocast context a run in ``precision`` computes with."""
    half = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    if precision.endswith("-mixed"):
        return torch.float32, lambda: torch.autocast(device, dtype=half)
    if precision in ("bf16-true", "16-true"):
        return half, nullcontext
    return (torch.float64 if precision == "64-true" else torch.float32), nullcontext


def time_formats(backbone: torch.nn.Module, shape: tuple[int, ...], precision: str, device: str) -> float:
    """NHWC's speed-up over NCHW for a training step (forward + backward) of ``backbone``.

    Works on copies and restores torch's random state, so the run that asked is unchanged
    whether the probe ran or its verdict came from the cache.
    """
    dtype, autocast = _arithmetic(precision, device)
    devices = [torch.cuda.current_device()] if device == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        frames = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
        models = {}
        for nhwc in (False, True):
            model = copy.deepcopy(backbone).to(device, dtype).train()
            if nhwc:
                model = model.to(memory_format=torch.channels_last)
            models[nhwc] = model
        inputs = {False: frames, True: frames.contiguous(memory_format=torch.channels_last)}

        def step(nhwc: bool) -> float:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with autocast():
                loss = models[nhwc](inputs[nhwc]).float().square().mean()
            loss.backward()
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start

        first = [step(False), step(True)]  # warm-up: oneDNN builds its kernels here
        per_pair = min(step(False) + step(True), sum(first))
        repeats = max(3, min(MAX_REPEATS, int(BUDGET_S / max(per_pair, 1e-6))))
        times: dict[bool, list[float]] = {False: [], True: []}
        for i in range(repeats):  # alternated, so drift on a noisy machine hits both alike
            for nhwc in ((False, True) if i % 2 == 0 else (True, False)):
                times[nhwc].append(step(nhwc))
    return statistics.median(times[False]) / statistics.median(times[True])


def probe_channels_last(
    backbone: torch.nn.Module, shape: tuple[int, ...], precision: str, device: str, default: bool
) -> LayoutVerdict:
    """NHWC or NCHW for this run: the cached verdict, or a fresh probe; ``default`` within `MARGIN`."""
    key = probe_key(backbone, shape, precision, device)
    path = cache_path()
    entry = _read_cache(path).get(key)
    cached = isinstance(entry, dict) and isinstance(entry.get("nhwc_speedup"), int | float)
    if cached:
        speedup = float(entry["nhwc_speedup"])  # type: ignore[index]
    else:
        speedup = time_formats(backbone, shape, precision, device)
        _write_cache(path, key, speedup)
    return LayoutVerdict(choose(speedup, default), speedup, cached)


def choose(speedup: float, default: bool) -> bool:
    """NHWC (True) or NCHW from NHWC's measured speed-up: ``default`` unless one wins by `MARGIN`."""
    if abs(speedup - 1) < MARGIN:
        return default
    return speedup > 1
