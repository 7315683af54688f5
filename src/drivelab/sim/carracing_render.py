"""CarRacing's road drawn with the same pixels, the env stepping ~1.9x faster.

Profiling a recorded CarRacing step (`benchmarks/collect.py --profile`) put 95 % of it in
gymnasium's renderer, and 70 % in ``_render_road``: every step it rotates and tests, one
``pygame.math.Vector2`` at a time in Python, all ~800 polygons of the field, the 400 grass
patches and the road, to draw the ~90 near enough to the screen. Physics was 1 %, the expert 3 %,
the Zarr write 5 %.

`fast_render_road` does the same work on arrays: the vertices are rotated with the arithmetic
of pygame's ``Vector2.rotate_rad`` (the angle reduced to [0, 2π) with ``fmod``, the exact
quarter turns within its epsilon, then ``cos·x − sin·y`` and ``sin·x + cos·y`` in float64), so
every coordinate is bit for bit what gymnasium computes; the same bounds test picks the same
polygons, which are drawn in the same order with the same ``gfxdraw`` calls. Frames are
identical (`tests/test_sim.py` compares whole episodes against the stock renderer); only the
Python loop over off-screen polygons is gone.
"""

from __future__ import annotations

import math
from types import MethodType
from typing import Any

import numpy as np
from gymnasium.envs.box2d import car_racing
from pygame import gfxdraw

#: pygame's Vector2 epsilon: rotations this close to a quarter turn are done exactly.
ROTATE_EPSILON = 1e-6
_HALF_PI = math.pi / 2
_TWO_PI = 2 * math.pi


def rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """``Vector2(p).rotate_rad(angle)`` for every row of ``points`` [..., 2], bit for bit."""
    angle = math.fmod(angle, _TWO_PI)
    if angle < 0:
        angle += _TWO_PI
    x, y = points[..., 0], points[..., 1]
    if math.fmod(angle + ROTATE_EPSILON, _HALF_PI) < 2 * ROTATE_EPSILON:
        quarter = int((angle + ROTATE_EPSILON) / _HALF_PI) % 4
        turned = ((x, y), (-y, x), (-x, -y), (y, -x))[quarter]
        return np.stack(turned, axis=-1)
    cos, sin = math.cos(angle), math.sin(angle)
    return np.stack((cos * x - sin * y, sin * x + cos * y), axis=-1)


def _grass() -> np.ndarray:
    """The 400 grass patches `_render_road` builds every step, as one [400, 4, 2] array."""
    d = car_racing.GRASS_DIM
    return np.array([[(d * x + d, d * y), (d * x, d * y), (d * x, d * y + d), (d * x + d, d * y + d)]
                     for x in range(-20, 20, 2) for y in range(-20, 20, 2)], np.float64)


_GRASS = _grass()
_FIELD = np.array([[(car_racing.PLAYFIELD, car_racing.PLAYFIELD), (car_racing.PLAYFIELD, -car_racing.PLAYFIELD),
                    (-car_racing.PLAYFIELD, -car_racing.PLAYFIELD), (-car_racing.PLAYFIELD, car_racing.PLAYFIELD)]],
                  np.float64)


def _road(env: Any) -> np.ndarray | None:
    """The track's road polygons [N, 4, 2], built once per track; None when a polygon has
    another vertex count (then the stock renderer draws). Colours are read at every draw: a
    tile's colour array changes when the car drives over it."""
    cached = env.__dict__.get("_drivelab_road")
    if cached is not None and cached[0] is env.road_poly:
        return cached[1]
    road = None
    if all(len(poly) == 4 for poly, _ in env.road_poly):
        vertices = np.array([[(p[0], p[1]) for p in poly] for poly, _ in env.road_poly], np.float64)
        road = vertices.reshape(-1, 4, 2)
    env.__dict__["_drivelab_road"] = (env.road_poly, road)
    return road


def _draw(env: Any, polygons: np.ndarray, colors: Any, zoom: float, translation: Any, angle: float,
          clip: bool = True) -> None:
    """gymnasium's ``_draw_colored_polygon`` for many polygons: same coordinates, same draws.

    ``colors``: one colour for all, or the road's ``(polygon, colour)`` list (read now)."""
    screen = rotate(polygons, angle)
    screen = np.stack((screen[..., 0] * zoom + translation[0], screen[..., 1] * zoom + translation[1]), axis=-1)
    if clip:
        margin = car_racing.MAX_SHAPE_DIM
        inside = ((screen[..., 0] >= -margin) & (screen[..., 0] <= car_racing.WINDOW_W + margin)
                  & (screen[..., 1] >= -margin) & (screen[..., 1] <= car_racing.WINDOW_H + margin))
        shown = np.flatnonzero(inside.any(axis=1))
    else:
        shown = np.arange(len(screen))
    for i in shown.tolist():
        poly = [tuple(point) for point in screen[i].tolist()]
        color = [int(c) for c in colors[i][1]] if isinstance(colors, list) else colors
        gfxdraw.aapolygon(env.surf, poly, color)
        gfxdraw.filled_polygon(env.surf, poly, color)


def fast_render_road(self: Any, zoom: float, translation: Any, angle: float) -> None:
    """`CarRacing._render_road` on arrays (see the module): background, grass, road."""
    road = _road(self)
    if road is None:
        car_racing.CarRacing._render_road(self, zoom, translation, angle)
        return
    _draw(self, _FIELD, self.bg_color, zoom, translation, angle, clip=False)
    _draw(self, _GRASS, self.grass_color, zoom, translation, angle)
    if len(road):
        _draw(self, road, self.road_poly, zoom, translation, angle)


def install(core: Any) -> None:
    """Draw ``core``'s (an unwrapped gymnasium CarRacing) road with `fast_render_road`."""
    if isinstance(core, car_racing.CarRacing):
        core._render_road = MethodType(fast_render_road, core)
