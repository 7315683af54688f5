"""Which machine this is, in the words a figure or a cached measurement needs.

A leaf: the specs table stamps its rates with it, the layout probe keys its cache on it, and
the benchmarks print it, because a speed figure means nothing without the CPU it came from.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_summary() -> str:
    """``AMD EPYC (AVX512, 2 cores)``: the model, torch's ISA level for its kernels, the cores."""
    return f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores)"
