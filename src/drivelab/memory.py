"""How much memory this machine can give: one reading for every "will it fit" check.

A size check that refuses with the figures (a 4 TB dense layer, a RAM cache larger than the
machine) is only as good as its notion of "available", so there is one: ``MemAvailable`` from
``/proc/meminfo`` (what the kernel can hand out without swapping), else free physical pages.
"""

from __future__ import annotations

import os
from pathlib import Path


def available_bytes() -> int:
    """Bytes the kernel can give this process now without swapping."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def format_bytes(count: float) -> str:
    """1536 -> '1.5 KiB': sizes in messages people read."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"
