"""Open polylines along lane centres: the ego's route and the paths other cars will follow.

``Track`` (track.py) answers the same questions for CarRacing's closed loop; a route has a start
and an end, and its points come from highway-env lanes, so it gets its own small class. The
env uses it for ``purpose``, progress and route deviation; the expert for pure pursuit, curve
speeds and conflict zones. Pure numpy on immutable arrays; highway-env coordinates (heading
``h`` = direction ``(cos h, sin h)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Spacing (m) of the sampled lane-centre points: fine enough for a 4 m wide lane.
SPACING = 1.0


def lane_points(lane: Any, start: float = 0.0, spacing: float = SPACING) -> np.ndarray:
    """Centre points [K, 2] of a highway-env lane from ``start`` to its end."""
    length = float(lane.length)
    s = np.arange(max(start, 0.0), length, spacing)
    s = np.append(s, length) if len(s) == 0 or s[-1] < length - 1e-6 else s
    return np.array([lane.position(float(x), 0.0) for x in s])


def bearing(position: np.ndarray, heading: float, target: np.ndarray) -> float:
    """Angle (rad) of ``target`` seen from a car at ``position`` facing ``heading``; positive =
    where a positive steering angle turns (to the right on the rendered frame)."""
    d = np.asarray(target, float) - np.asarray(position, float)
    return _wrap(math.atan2(float(d[1]), float(d[0])) - heading)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


@dataclass(frozen=True)
class Path:
    """An open polyline ``points`` [N, 2] with cumulative arc length ``arc`` [N]."""

    points: np.ndarray
    arc: np.ndarray

    @classmethod
    def from_points(cls, points: np.ndarray) -> Path:
        pts = np.asarray(points, float).reshape(-1, 2)
        keep = np.concatenate([[True], np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-3])
        pts = pts[keep]
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        pts.setflags(write=False)
        arc.setflags(write=False)
        return cls(pts, arc)

    @classmethod
    def from_lanes(cls, lanes: Iterable[Any], start: float = 0.0) -> Path:
        """Concatenated centre-lines of ``lanes`` (the first from ``start`` metres on)."""
        chunks = [lane_points(lane, start if k == 0 else 0.0) for k, lane in enumerate(lanes)]
        return cls.from_points(np.concatenate(chunks))

    @property
    def length(self) -> float:
        return float(self.arc[-1])

    def project(self, xy: np.ndarray) -> tuple[float, float]:
        """(arc length, distance) of the point of the path closest to ``xy``."""
        xy = np.asarray(xy, float)
        a, b = self.points[:-1], self.points[1:]
        ab = b - a
        t = np.clip(np.einsum("ij,ij->i", xy - a, ab) / np.maximum(
            np.einsum("ij,ij->i", ab, ab), 1e-12), 0.0, 1.0)
        foot = a + t[:, None] * ab
        d = np.linalg.norm(foot - xy, axis=1)
        i = int(np.argmin(d))
        return float(self.arc[i] + t[i] * (self.arc[i + 1] - self.arc[i])), float(d[i])

    def point_at(self, s: float) -> np.ndarray:
        """Point at arc length ``s``, clamped to the ends."""
        s = float(np.clip(s, 0.0, self.length))
        i = min(max(int(np.searchsorted(self.arc, s, side="right")) - 1, 0), len(self.arc) - 2)
        seg = self.arc[i + 1] - self.arc[i]
        t = 0.0 if seg <= 0 else (s - self.arc[i]) / seg
        return self.points[i] + t * (self.points[i + 1] - self.points[i])

    def heading_at(self, s: float) -> float:
        a, b = self.point_at(s - 0.5), self.point_at(s + 0.5)
        return math.atan2(float(b[1] - a[1]), float(b[0] - a[0]))

    def curvature_at(self, s: np.ndarray, window: float = 3.0) -> np.ndarray:
        """|curvature| (1/m) at arc lengths ``s``, from the heading change over ``2 window``."""
        s = np.atleast_1d(np.asarray(s, float))
        h0 = np.array([self.heading_at(x - window) for x in s])
        h1 = np.array([self.heading_at(x + window) for x in s])
        return np.abs((h1 - h0 + np.pi) % (2 * np.pi) - np.pi) / (2 * window)

    def window(self, s0: float, s1: float) -> tuple[np.ndarray, np.ndarray]:
        """Points and their arc lengths between ``s0`` and ``s1`` (sampled points only)."""
        i0 = max(int(np.searchsorted(self.arc, s0)) - 1, 0)
        i1 = min(int(np.searchsorted(self.arc, s1)) + 1, len(self.arc))
        return self.points[i0:i1], self.arc[i0:i1]
