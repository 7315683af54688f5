"""Bins over one action output: intervals plus exact-value bins.

Expert labels pile up on single values (steering exactly 0, throttle exactly 1), so a plain
0.1-wide histogram hides the spike inside a neighbouring interval. A `Binning` therefore holds
interval edges *and* exact values: a value within `tol` of an exact value falls in that value's
own bin, everything else in the interval ``[edge_i, edge_i+1)`` that holds it (the last interval
is closed unless its top edge is an exact value). Bins are ordered by position on the axis, so
``-1, (-1,-0.6), ..., 0, (0,0.2), ...`` reads like the Charles bin lists.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivelab.errors import DrivelabError

#: A bin list as the Charles team wrote them: floats are exact values, pairs are intervals.
BinSpec = Sequence[float | tuple[float, float]]

PRESETS = ("v1", "v2")

# Charles balancing_v1 bin lists (reference: "Data balancing").
_V1_PEDAL: list[float | tuple[float, float]] = [0.0, (0.0, 0.2), (0.2, 0.8), (0.8, 1.0), 1.0]
_V1_STEERING: list[float | tuple[float, float]] = [
    -1.0, (-1.0, -0.6), (-0.6, -0.2), (-0.2, 0.0), 0.0, (0.0, 0.2), (0.2, 0.6), (0.6, 1.0), 1.0,
]

# The brake half of the merged pedal: the throttle list mirrored (exact 0 comes from the pedal list).
_V1_BRAKE_MIRROR: list[float | tuple[float, float]] = [-1.0, (-1.0, -0.8), (-0.8, -0.2), (-0.2, 0.0)]


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Binning:
    """Interval edges plus exact values; `assign` maps label values to bin indices."""

    edges: tuple[float, ...]
    exact: tuple[float, ...] = ()
    tol: float = 1e-6
    name: str = "output"

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges, dtype=np.float64)
        if edges.size < 2 or not np.all(np.isfinite(edges)):
            raise DrivelabError(f"bins for {self.name}: need at least two finite edges, got {list(self.edges)}")
        steps = np.diff(edges)
        if np.any(steps <= 0):
            bad = [f"({_fmt(a)},{_fmt(b)})" for a, b, d in zip(edges[:-1], edges[1:], steps, strict=True) if d <= 0]
            raise DrivelabError(f"bins for {self.name}: intervals {', '.join(bad)} overlap or are empty; "
                                "edges must increase")
        ex = sorted(self.exact)
        for a, b in itertools.pairwise(ex):
            if b - a <= 2 * self.tol:
                raise DrivelabError(f"bins for {self.name}: exact bins {_fmt(a)} and {_fmt(b)} overlap "
                                    f"(closer than 2*tol={2 * self.tol:g})")
        outside = [x for x in ex if x < edges[0] - self.tol or x > edges[-1] + self.tol]
        if outside:
            raise DrivelabError(f"bins for {self.name}: exact bins {', '.join(map(_fmt, outside))} lie outside "
                                f"[{_fmt(edges[0])}, {_fmt(edges[-1])}]")
        object.__setattr__(self, "exact", tuple(ex))
        # position order: an exact value sits before the interval that starts at it
        keys = [((float(a), 1), ("interval", i)) for i, a in enumerate(edges[:-1])]
        keys += [((float(x), 0), ("exact", j)) for j, x in enumerate(ex)]
        order = [tag for _, tag in sorted(keys)]
        object.__setattr__(self, "_order", tuple(order))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_spec(cls, spec: BinSpec, name: str = "output", tol: float = 1e-6) -> Binning:
        """Read a Charles-style list (exact floats and (lo, hi) intervals) and check it.

        Intervals must tile the axis: a gap between two of them leaves values without a bin and
        an overlap gives a value two bins, so both are errors naming the intervals.
        """
        intervals = sorted((float(a), float(b)) for a, b in (s for s in spec if isinstance(s, tuple)))
        exact = [float(s) for s in spec if not isinstance(s, tuple)]
        if not intervals:
            raise DrivelabError(f"bins for {name}: the list has no intervals, only exact values {exact}")
        for a, b in intervals:
            if b <= a:
                raise DrivelabError(f"bins for {name}: interval ({_fmt(a)},{_fmt(b)}) is empty")
        for (a0, b0), (a1, b1) in itertools.pairwise(intervals):
            if a1 > b0:
                raise DrivelabError(f"bins for {name}: values between {_fmt(b0)} and {_fmt(a1)} have no bin "
                                    f"(gap between ({_fmt(a0)},{_fmt(b0)}) and ({_fmt(a1)},{_fmt(b1)}))")
            if a1 < b0:
                raise DrivelabError(f"bins for {name}: intervals ({_fmt(a0)},{_fmt(b0)}) and "
                                    f"({_fmt(a1)},{_fmt(b1)}) overlap")
        edges = tuple([intervals[0][0]] + [b for _, b in intervals])
        return cls(edges=edges, exact=tuple(exact), tol=tol, name=name)

    # ------------------------------------------------------------------ queries
    @property
    def n_bins(self) -> int:
        return len(self._order)  # type: ignore[attr-defined]

    @property
    def labels(self) -> list[str]:
        """Bin names in axis order: ``0`` for an exact bin, ``[0.2,0.6)``/``(0,0.2)`` for intervals."""
        ex = set(self.exact)
        out: list[str] = []
        last = len(self.edges) - 2
        for kind, i in self._order:  # type: ignore[attr-defined]
            if kind == "exact":
                out.append(_fmt(self.exact[i]))
                continue
            a, b = self.edges[i], self.edges[i + 1]
            left = "(" if a in ex else "["
            right = "]" if i == last and b not in ex else ")"
            out.append(f"{left}{_fmt(a)},{_fmt(b)}{right}")
        return out

    def check_covers(self, low: float | None, high: float | None) -> None:
        """Fail if part of the action's range [low, high] falls in no bin."""
        gaps = []
        if low is not None and low < self.edges[0] - self.tol:
            gaps.append(f"[{_fmt(low)},{_fmt(self.edges[0])})")
        if high is not None and high > self.edges[-1] + self.tol:
            gaps.append(f"({_fmt(self.edges[-1])},{_fmt(high)}]")
        if gaps:
            raise DrivelabError(f"bins for {self.name} leave {' and '.join(gaps)} of its range "
                                f"[{_fmt(low or 0)},{_fmt(high or 0)}] uncovered; extend the bins")

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Bin index (axis order, 0..n_bins-1) of every value; values outside all bins are an error."""
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        edges = np.asarray(self.edges)
        lo, hi = edges[0] - self.tol, edges[-1] + self.tol
        slot_of = {tag: k for k, tag in enumerate(self._order)}  # type: ignore[attr-defined]
        interval = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
        lookup = np.array([slot_of[("interval", i)] for i in range(len(edges) - 1)])
        out = lookup[interval]
        bad = ~np.isfinite(v) | (v < lo) | (v > hi)
        for j, x in enumerate(self.exact):
            hit = np.abs(v - x) <= self.tol
            out[hit] = slot_of[("exact", j)]
            bad &= ~hit
        if np.any(bad):
            first = v[bad][0]
            raise DrivelabError(f"{int(bad.sum())} {self.name} values (e.g. {first:g}) lie outside its bins "
                                f"[{_fmt(edges[0])}, {_fmt(edges[-1])}]")
        return out.astype(np.int64)


def preset_binning(preset: str, name: str, low: float | None, high: float | None) -> Binning:
    """The Charles bins for an output, fitted to its range.

    ``v2``: 0.1-wide bins over [low, high] plus an exact 0, and for pedals an exact bin at each
    end of the range (full throttle/brake spikes): 21 bins for steering, 12 for a [0,1] pedal,
    23 for drivelab's merged ``accel_brake`` in [-1,1]. ``v1``: the Charles lists; for the merged
    pedal the brake half mirrors the throttle list.
    """
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        raise DrivelabError(f"output {name} has no finite range [low, high]; preset bins need one")
    steering = "steer" in name.lower()
    if preset == "v2":
        n = round((high - low) / 0.1)
        edges = tuple(float(x) for x in np.round(np.linspace(low, high, n + 1), 10))
        exact = {0.0} if low <= 0.0 <= high else set()
        if not steering:
            exact |= {float(low), float(high)}
        b = Binning(edges=edges, exact=tuple(sorted(exact)), name=name)
    elif preset == "v1":
        if (low, high) == (0.0, 1.0):
            spec = _V1_PEDAL
        elif (low, high) == (-1.0, 1.0):
            spec = _V1_STEERING if steering else _V1_BRAKE_MIRROR + _V1_PEDAL
        else:
            raise DrivelabError(f"no v1 bins for {name} with range [{_fmt(low)},{_fmt(high)}]; use --bins v2")
        b = Binning.from_spec(spec, name=name)
    else:
        raise DrivelabError(f"unknown bins preset {preset!r}; choose one of {', '.join(PRESETS)}")
    b.check_covers(low, high)
    return b
