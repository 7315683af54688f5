"""Exact, mergeable statistics of frames and signals.

Each committed episode stores its own count / sum / sum of squares / min / max per component;
the dataset's mean and std are merged from those, so `data info` never rereads frames and the
numbers stay exact however the episodes were split across workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SignalMoments:
    """Sufficient statistics per component (a channel of frames, or a value of a signal)."""

    count: int
    total: tuple[float, ...]
    total_sq: tuple[float, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]

    @classmethod
    def of(cls, values: np.ndarray) -> SignalMoments:
        """Moments of ``values`` shaped [N, components]."""
        v = np.asarray(values)
        if v.ndim == 1:
            v = v[:, None]
        n = int(v.shape[0])
        if n == 0:
            zeros = (0.0,) * v.shape[1]
            inf = (float("inf"),) * v.shape[1]
            return cls(0, zeros, zeros, inf, tuple(-x for x in inf))
        f = v.astype(np.float64, copy=False)
        return cls(
            count=n,
            total=tuple(float(x) for x in f.sum(axis=0)),
            total_sq=tuple(float(x) for x in np.einsum("ij,ij->j", f, f)),
            minimum=tuple(float(x) for x in f.min(axis=0)),
            maximum=tuple(float(x) for x in f.max(axis=0)),
        )

    @classmethod
    def of_uint8(cls, values: np.ndarray) -> SignalMoments:
        """Moments of uint8 ``values`` [N, components] from per-component value histograms.

        Exact and ~20x cheaper than the float path for frames: counting 256 possible values
        replaces a float64 copy of every pixel.
        """
        v = np.asarray(values, dtype=np.uint8)
        levels = np.arange(256, dtype=np.float64)
        total, total_sq, minimum, maximum = [], [], [], []
        for c in range(v.shape[1]):
            hist = np.bincount(v[:, c], minlength=256).astype(np.float64)
            present = np.nonzero(hist)[0]
            total.append(float(hist @ levels))
            total_sq.append(float(hist @ (levels * levels)))
            minimum.append(float(present[0]) if present.size else float("inf"))
            maximum.append(float(present[-1]) if present.size else float("-inf"))
        return cls(int(v.shape[0]), tuple(total), tuple(total_sq), tuple(minimum), tuple(maximum))

    @property
    def mean(self) -> list[float]:
        if self.count == 0:
            return [float("nan")] * len(self.total)
        return [t / self.count for t in self.total]

    @property
    def std(self) -> list[float]:
        if self.count == 0:
            return [float("nan")] * len(self.total)
        return [
            float(np.sqrt(max(sq / self.count - m * m, 0.0)))
            for sq, m in zip(self.total_sq, self.mean, strict=True)
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean": self.mean,
            "std": self.std,
            "min": list(self.minimum),
            "max": list(self.maximum),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": list(self.total),
            "sum_sq": list(self.total_sq),
            "min": list(self.minimum),
            "max": list(self.maximum),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SignalMoments:
        return cls(
            count=int(raw["count"]),
            total=tuple(raw["sum"]),
            total_sq=tuple(raw["sum_sq"]),
            minimum=tuple(raw["min"]),
            maximum=tuple(raw["max"]),
        )


def merge_moments(parts: Sequence[SignalMoments]) -> SignalMoments:
    """Exact merge: counts and sums add, extremes take the extreme."""
    if not parts:
        raise ValueError("nothing to merge")
    width = len(parts[0].total)
    return SignalMoments(
        count=sum(p.count for p in parts),
        total=tuple(sum(p.total[i] for p in parts) for i in range(width)),
        total_sq=tuple(sum(p.total_sq[i] for p in parts) for i in range(width)),
        minimum=tuple(min(p.minimum[i] for p in parts) for i in range(width)),
        maximum=tuple(max(p.maximum[i] for p in parts) for i in range(width)),
    )
