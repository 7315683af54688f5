"""Closed-loop track centre-line geometry, shared by the env (purpose, unstuck) and the expert.

CarRacing describes its road as a closed polyline of centre-line points, each with a heading.
Both the "purpose" telemetry and the expert need the same questions answered quickly — which
point is nearest to the car, where is the point a given distance further along the road, how
sharply does the road bend — so they live here once, as pure numpy on immutable arrays.

Heading convention (the one Box2D/CarRacing uses for the car hull): an angle ``a`` means the
forward direction ``(-sin a, cos a)`` and the right-hand direction ``(cos a, sin a)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def forward_vector(angle: float) -> np.ndarray:
    """Unit forward direction of a body or track point with heading ``angle``."""
    return np.array([-math.sin(angle), math.cos(angle)])


def right_vector(angle: float) -> np.ndarray:
    """Unit right-hand direction of a body or track point with heading ``angle``."""
    return np.array([math.cos(angle), math.sin(angle)])


def relative_bearing(origin: np.ndarray, angle: float, target: np.ndarray) -> float:
    """Angle (radians, in (-pi, pi]) of ``target`` seen from ``origin`` facing ``angle``.

    Positive means *to the right*, the same sign as the steering that turns towards it, so a
    policy can read it directly as "steer this way".
    """
    d = np.asarray(target, dtype=np.float64) - np.asarray(origin, dtype=np.float64)
    return math.atan2(float(d @ right_vector(angle)), float(d @ forward_vector(angle)))


@dataclass(frozen=True)
class Track:
    """A closed centre-line: ``points`` [N, 2] in driving order, ``headings`` [N] (radians).

    ``arc`` [N + 1] is the cumulative distance along the loop, ``arc[N]`` the lap length, so
    arc-length arithmetic modulo ``length`` maps any distance to a place on the road.
    """

    points: np.ndarray
    headings: np.ndarray
    arc: np.ndarray

    @classmethod
    def from_points(cls, points: np.ndarray, headings: np.ndarray) -> Track:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 3:
            raise ValueError(f"a closed track needs at least 3 points, got {len(pts)}")
        seg = np.linalg.norm(np.roll(pts, -1, axis=0) - pts, axis=1)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        pts.setflags(write=False)
        hdg = np.asarray(headings, dtype=np.float64).reshape(-1).copy()
        hdg.setflags(write=False)
        arc.setflags(write=False)
        return cls(points=pts, headings=hdg, arc=arc)

    @classmethod
    def from_carracing(cls, track: Sequence[tuple[float, float, float, float]]) -> Track:
        """Build from ``CarRacing.track`` entries ``(alpha, beta, x, y)``."""
        arr = np.asarray(track, dtype=np.float64)
        return cls.from_points(arr[:, 2:4], arr[:, 1])

    def __len__(self) -> int:
        return len(self.points)

    @property
    def length(self) -> float:
        return float(self.arc[-1])

    def nearest_index(self, xy: np.ndarray) -> int:
        """Index of the centre-line point closest to ``xy`` (global search: robust after a
        teleport or a spin, and cheap for the few hundred points of a CarRacing track)."""
        d = self.points - np.asarray(xy, dtype=np.float64)
        return int(np.argmin(np.einsum("ij,ij->i", d, d)))

    def nearest_index_from(self, xy: np.ndarray, start: int) -> int:
        """Nearest point found by walking from ``start`` while the distance shrinks.

        A tracker's answer: where a bend folds the road back on itself, the global nearest
        point can belong to a later stretch of road, while walking from the last known index
        stays on the stretch the car is actually on.
        """
        xy = np.asarray(xy, dtype=np.float64)
        n = len(self)
        best = start % n
        best_d = float(np.sum((self.points[best] - xy) ** 2))
        for direction in (1, -1):
            while True:
                j = (best + direction) % n
                d = float(np.sum((self.points[j] - xy) ** 2))
                if d >= best_d:
                    break
                best, best_d = j, d
        return best

    def along(self, xy: np.ndarray, index: int | None = None) -> float:
        """Arc-length coordinate of the projection of ``xy`` on the centre-line, measured from
        point ``index`` (default: the nearest point)."""
        i = self.nearest_index(xy) if index is None else index % len(self)
        offset = float((np.asarray(xy, dtype=np.float64) - self.points[i]) @ self.tangent(i))
        return (self.arc[i] + offset) % self.length

    def tangent(self, index: int) -> np.ndarray:
        """Unit direction of travel at point ``index`` (from the stored heading)."""
        return forward_vector(float(self.headings[index % len(self)]))

    def point_at(self, s: float) -> np.ndarray:
        """Centre-line point at arc length ``s`` (wrapped around the loop), interpolated."""
        s = float(s) % self.length
        i = int(np.searchsorted(self.arc, s, side="right")) - 1
        i = min(max(i, 0), len(self) - 1)
        seg = self.arc[i + 1] - self.arc[i]
        t = 0.0 if seg <= 0 else (s - self.arc[i]) / seg
        return self.points[i] + t * (self.points[(i + 1) % len(self)] - self.points[i])

    def index_ahead(self, xy: np.ndarray, min_ahead: float = 0.5) -> int:
        """First centre-line point at least ``min_ahead`` further along the road than ``xy``.

        Used to put a stuck car back on the road *forward* of where it was, so a teleport never
        sends it back over tiles it already drove.
        """
        i = self.nearest_index(xy)
        offset = float((np.asarray(xy, dtype=np.float64) - self.points[i]) @ self.tangent(i))
        return i if offset <= -min_ahead else (i + 1) % len(self)

    def curvature(self) -> np.ndarray:
        """Signed curvature [N] (1/units; positive = left turn) from the heading change per
        unit of arc length, with headings unwrapped so the loop seam does not spike."""
        dh = np.diff(np.unwrap(np.concatenate([self.headings, self.headings[:1]])))
        seg = np.diff(self.arc)
        # Average the change over the segments before and after each point: a centred estimate.
        k_seg = dh / np.maximum(seg, 1e-9)
        return 0.5 * (k_seg + np.roll(k_seg, 1))
