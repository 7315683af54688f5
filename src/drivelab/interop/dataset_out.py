"""What every interop import checks before it writes (`drivelab.data.dataset_out` writes).

`InteropError` is the one-line error of the interop verbs; `check_import_fits` refuses an import
that cannot fit in memory or on disk, `tail_splits` / `check_split_counts` pick the val and test
episodes as `drivelab collect` does, `fit_frame` / `check_size` resize frames to ``--size``. The
dataset itself is checked, created, filled and (on failure) removed by `drivelab.data.dataset_out`,
the one path every importer writes through.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from drivelab.errors import DrivelabError
from drivelab.memory import available_bytes, format_bytes

#: One episode is held decoded (and stacked once) while it is written: its frames times this.
EPISODE_COPIES = 2


class InteropError(DrivelabError):
    """An input that is not the format it claims to be, or an output that cannot be written."""


def check_import_fits(out: Path, frame_shape: Sequence[int], episode_frames: int, disk_bytes: int,
                      fix: str) -> None:
    """Refuse, with the figures and before anything is created, an import that cannot fit.

    Memory: one episode of ``episode_frames`` frames is held decoded while it is written
    (`EPISODE_COPIES` copies), which must fit in three quarters of what is available now (as the
    loader's RAM cache is judged). Disk: ``disk_bytes`` is what the import needs at least; the
    file system holding ``out`` must have that much free. ``fix`` ends the memory refusal.
    """
    frame = math.prod(int(x) for x in frame_shape)  # Python ints: a bogus shape cannot overflow
    need = EPISODE_COPIES * episode_frames * frame
    have = available_bytes()
    if need > 0.75 * have:
        dims = "x".join(str(int(x)) for x in frame_shape)
        raise InteropError(
            f"frames of {dims} take about {format_bytes(need)} of memory for an episode of "
            f"{episode_frames} frames while it is written, but {format_bytes(have)} is available: "
            f"{fix} (nothing was written)"
        )
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return
    if disk_bytes > free:
        raise InteropError(
            f"--out {out}: the import needs at least {format_bytes(disk_bytes)} on disk but "
            f"{format_bytes(free)} is free there: free some space or choose another --out "
            "(nothing was written)"
        )


def tail_splits(episodes: int, val: int, test: int) -> tuple[list[int], list[int]]:
    """The val and test episodes as `drivelab collect` picks them: the last ones, test last."""
    if val < 0 or test < 0 or val + test >= max(episodes, 1):
        raise InteropError(
            f"--val-episodes {val} + --test-episodes {test} leaves no training episode out of "
            f"{episodes}: lower them"
        )
    first_test = episodes - test
    return list(range(first_test - val, first_test)), list(range(first_test, episodes))


def check_split_counts(val: int, test: int) -> None:
    """Negative split sizes are refused before the input is read."""
    if val < 0 or test < 0:
        raise InteropError(f"--val-episodes {val} / --test-episodes {test}: use counts >= 0")


def fit_frame(rgb: np.ndarray, size: Sequence[int] | None) -> np.ndarray:
    """``rgb`` (uint8 HxWx3) resized to ``size`` = (H, W) when given, else unchanged."""
    if size is None or tuple(rgb.shape[:2]) == tuple(size):
        return rgb
    img = Image.fromarray(rgb).resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img, np.uint8)


def check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """``--size H W``: both at least 8 px (the smallest frame a backbone accepts)."""
    if size is None:
        return None
    if len(size) != 2 or min(size) < 8:
        raise InteropError(f"--size {' '.join(map(str, size))}: give height and width, each at least 8 px")
    return int(size[0]), int(size[1])
