"""Synthetic traffic-sign images in the official GTSRB folder layout (no download needed).

Why: the GTSRB importer, the demo and the tests must exercise the *real* file format (PPM
images, per-class ``GT-000NN.csv`` files with ROI boxes, a test folder with one
``GT-final_test.csv``) on machines without the 300 MB download. The images are drawn with
Pillow and are clearly labelled SYNTHETIC (a ``README.txt`` in the output folder; the importer
records ``source: synthetic-gtsrb``). They are not a substitute for the real data set's
accuracy numbers.

Each class has a fixed look (shape, border and fill colours, a symbol or digits), loosely
following the 43 GTSRB classes (red-bordered circles with speed digits, warning triangles, the
yield triangle, the stop octagon, the priority diamond, blue mandatory circles); classes beyond
43 cycle through circle/triangle/octagon/diamond/square with their number as the symbol. Every
image varies in size (about 0.4-1.25 x ``size``, i.e. 25-80 px for the default 64), rotation,
blur, lighting, background clutter and ROI margin. Like the real training set, images come in
*tracks*: several views of one physical sign (``TTTTT_IIIII.ppm``) that grow as the car
approaches, so a split that respects tracks can be tested. Output is deterministic for a seed:
each class draws from its own generator seeded with ``(seed, class)``.

Layout written::

    DIR/README.txt
    DIR/Final_Training/Images/000NN/GT-000NN.csv    Filename;Width;Height;Roi.X1;...;ClassId
    DIR/Final_Training/Images/000NN/TTTTT_IIIII.ppm
    DIR/Final_Test/Images/GT-final_test.csv
    DIR/Final_Test/Images/NNNNN.ppm
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from drivelab.errors import DrivelabError
from drivelab.outputs import check_output_dir, write_text

CSV_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
TRACK_LENGTH = 5  # views per physical sign (the real set has 30)
CANVAS = 128  # the sign is drawn at this resolution, then scaled down (anti-aliasing)

RED = (200, 25, 30)
WHITE = (240, 240, 235)
BLUE = (20, 70, 170)
YELLOW = (245, 190, 20)
BLACK = (20, 20, 20)
GREY = (120, 120, 120)

# (shape, border colour, fill colour, symbol, symbol colour) for the 43 GTSRB classes.
_GTSRB_LOOK: list[tuple[str, tuple[int, int, int], tuple[int, int, int], str, tuple[int, int, int]]] = [
    ("circle", RED, WHITE, "20", BLACK),
    ("circle", RED, WHITE, "30", BLACK),
    ("circle", RED, WHITE, "50", BLACK),
    ("circle", RED, WHITE, "60", BLACK),
    ("circle", RED, WHITE, "70", BLACK),
    ("circle", RED, WHITE, "80", BLACK),
    ("circle", GREY, WHITE, "/80", GREY),
    ("circle", RED, WHITE, "100", BLACK),
    ("circle", RED, WHITE, "120", BLACK),
    ("circle", RED, WHITE, "==", BLACK),
    ("circle", RED, WHITE, "=T", BLACK),
    ("triangle", RED, WHITE, "+", BLACK),
    ("diamond", WHITE, YELLOW, "", BLACK),
    ("yield", RED, WHITE, "", BLACK),
    ("octagon", WHITE, RED, "STOP", WHITE),
    ("circle", RED, WHITE, "", BLACK),
    ("circle", RED, WHITE, "T", BLACK),
    ("circle", RED, RED, "-", WHITE),
    ("triangle", RED, WHITE, "!", BLACK),
    ("triangle", RED, WHITE, "<", BLACK),
    ("triangle", RED, WHITE, ">", BLACK),
    ("triangle", RED, WHITE, "S", BLACK),
    ("triangle", RED, WHITE, "n", BLACK),
    ("triangle", RED, WHITE, "~", BLACK),
    ("triangle", RED, WHITE, "|)", BLACK),
    ("triangle", RED, WHITE, "W", BLACK),
    ("triangle", RED, WHITE, "o", RED),
    ("triangle", RED, WHITE, "P", BLACK),
    ("triangle", RED, WHITE, "K", BLACK),
    ("triangle", RED, WHITE, "B", BLACK),
    ("triangle", RED, WHITE, "*", BLUE),
    ("triangle", RED, WHITE, "D", BLACK),
    ("circle", GREY, WHITE, "//", GREY),
    ("circle", WHITE, BLUE, ">", WHITE),
    ("circle", WHITE, BLUE, "<", WHITE),
    ("circle", WHITE, BLUE, "^", WHITE),
    ("circle", WHITE, BLUE, "^>", WHITE),
    ("circle", WHITE, BLUE, "<^", WHITE),
    ("circle", WHITE, BLUE, "\\", WHITE),
    ("circle", WHITE, BLUE, "/", WHITE),
    ("circle", WHITE, BLUE, "@", WHITE),
    ("circle", GREY, WHITE, "/=", GREY),
    ("circle", GREY, WHITE, "/T", GREY),
]
_CYCLE_SHAPES = ("circle", "triangle", "octagon", "diamond", "square")
_CYCLE_COLOURS = (RED, BLUE, BLACK, YELLOW, GREY)


@dataclass(frozen=True)
class SynthSummary:
    """What `synthesize_signs` wrote, for the command's report."""

    path: Path
    classes: int
    train_images: int
    test_images: int


def class_look(class_id: int) -> tuple[str, tuple[int, int, int], tuple[int, int, int], str, tuple[int, int, int]]:
    """The fixed appearance of one class: shape, border, fill, symbol and symbol colour."""
    if class_id < len(_GTSRB_LOOK):
        return _GTSRB_LOOK[class_id]
    shape = _CYCLE_SHAPES[class_id % len(_CYCLE_SHAPES)]
    border = _CYCLE_COLOURS[(class_id // len(_CYCLE_SHAPES)) % len(_CYCLE_COLOURS)]
    return shape, border, WHITE, str(class_id), BLACK


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon of a sign outline of radius ``r`` (circles are drawn as 48-gons)."""
    if shape == "circle":
        n, start = 48, 0.0
    elif shape == "triangle":
        n, start = 3, -90.0
    elif shape == "yield":
        n, start = 3, 90.0
    elif shape == "octagon":
        n, start = 8, 22.5
    elif shape == "diamond":
        n, start = 4, -90.0
    else:  # square
        n, start = 4, 45.0
    return [
        (cx + r * math.cos(math.radians(start + 360.0 * k / n)), cy + r * math.sin(math.radians(start + 360.0 * k / n)))
        for k in range(n)
    ]


def draw_sign(class_id: int, rng: np.random.Generator) -> Image.Image:
    """One sign of ``class_id`` on a transparent square canvas, with slightly jittered colours."""
    shape, border, fill, symbol, ink = class_look(class_id)

    def jitter(rgb: tuple[int, int, int]) -> tuple[int, int, int, int]:
        j = rng.integers(-18, 19, size=3)
        r, g, b = (int(np.clip(v + d, 0, 255)) for v, d in zip(rgb, j, strict=True))
        return (r, g, b, 255)

    img = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    c = CANVAS / 2
    r = CANVAS / 2 - 2
    draw.polygon(_shape_points(shape, c, c, r), fill=jitter(border))
    inner = 0.72 if shape in ("triangle", "yield") else 0.8
    draw.polygon(_shape_points(shape, c, c, r * inner), fill=jitter(fill))
    if symbol:
        size = int(CANVAS * (0.42 if len(symbol) <= 2 else 0.3))
        font = ImageFont.load_default(size=size)
        cy = c + (CANVAS * 0.08 if shape == "triangle" else 0.0) - (CANVAS * 0.08 if shape == "yield" else 0.0)
        draw.text((c, cy), symbol, fill=jitter(ink), font=font, anchor="mm")
    return img


def _background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A muted gradient with random shapes: clutter the classifier must learn to ignore."""
    base = rng.integers(40, 200, size=3)
    top = np.clip(base + rng.integers(-50, 51, size=3), 0, 255)
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    grad = (1 - t) * top[None, None, :] + t * base[None, None, :]
    arr = np.broadcast_to(grad, (height, width, 3)).astype(np.uint8)
    bg = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    draw = ImageDraw.Draw(bg)
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = int(rng.integers(-width // 2, width)), int(rng.integers(-height // 2, height))
        x1, y1 = x0 + int(rng.integers(4, width)), y0 + int(rng.integers(4, height))
        colour = tuple(int(v) for v in rng.integers(30, 220, size=3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
    return bg


def render_view(
    class_id: int, side: int, angle: float, light: float, blur: float, rng: np.random.Generator
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One photo-like view: (RGB image, inclusive ROI x1, y1, x2, y2) as GTSRB stores it."""
    width = side
    height = max(16, side + int(rng.integers(-3, 4)))
    margin_frac = float(rng.uniform(0.06, 0.2))
    roi_w = max(8, round(width * (1 - 2 * margin_frac)))
    roi_h = max(8, round(height * (1 - 2 * margin_frac)))
    x1 = int(rng.integers(0, width - roi_w + 1))
    y1 = int(rng.integers(0, height - roi_h + 1))
    sign = draw_sign(class_id, rng).rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    sign = sign.resize((roi_w, roi_h), Image.Resampling.LANCZOS)
    img = _background(width, height, rng)
    img.paste(sign, (x1, y1), sign)
    img = ImageEnhance.Brightness(img).enhance(light)
    img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.7, 1.2)))
    if blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    return img, (x1, y1, x1 + roi_w - 1, y1 + roi_h - 1)


def _csv_row(name: str, img: Image.Image, roi: tuple[int, int, int, int], class_id: int) -> str:
    return f"{name};{img.width};{img.height};{roi[0]};{roi[1]};{roi[2]};{roi[3]};{class_id}"


def synthesize_signs(
    out: str | Path, classes: int = 43, per_class: int = 30, seed: int = 0, size: int = 64,
    test_per_class: int | None = None,
) -> SynthSummary:
    """Write a synthetic GTSRB-layout data set to ``out`` (which must not exist yet)."""
    out = check_output_dir(out, "--out")
    if out.exists():
        raise DrivelabError(f"{out} already exists: choose a new --out (nothing was overwritten)")
    if classes < 2:
        raise DrivelabError(f"--classes {classes}: a classification set needs at least 2 classes")
    if per_class < 1:
        raise DrivelabError(f"--per-class {per_class}: write at least 1 image per class")
    if size < 16:
        raise DrivelabError(f"--size {size}: use at least 16 px")
    n_test = max(1, per_class // 3) if test_per_class is None else test_per_class
    lo, hi = max(16, round(0.4 * size)), max(17, round(1.25 * size))
    train_root = out / "Final_Training" / "Images"
    test_root = out / "Final_Test" / "Images"
    test_root.mkdir(parents=True)
    test_items: list[tuple[Image.Image, tuple[int, int, int, int], int]] = []
    for class_id in range(classes):
        rng = np.random.default_rng([seed, class_id])
        folder = train_root / f"{class_id:05d}"
        folder.mkdir(parents=True)
        rows = [CSV_HEADER]
        for i in range(per_class + n_test):
            track, view = divmod(i, TRACK_LENGTH)
            if view == 0:  # a new physical sign: its own pose and light
                angle0 = float(rng.uniform(-12, 12))
                light0 = float(rng.uniform(0.45, 1.35))
                start = int(rng.integers(lo, max(lo + 1, (lo + hi) // 2)))
            side = int(min(hi, start + view * (hi - start) / max(1, TRACK_LENGTH - 1)))
            img, roi = render_view(
                class_id, side, angle0 + float(rng.uniform(-3, 3)),
                light0 * float(rng.uniform(0.9, 1.1)), float(rng.uniform(0.0, 1.2)), rng,
            )
            if i < per_class:
                name = f"{track:05d}_{view:05d}.ppm"
                img.save(folder / name)
                rows.append(_csv_row(name, img, roi, class_id))
            else:
                test_items.append((img, roi, class_id))
        write_text(folder / f"GT-{class_id:05d}.csv", "\n".join(rows) + "\n", flag="--out")
    order = np.random.default_rng([seed, classes, 7]).permutation(len(test_items))
    rows = [CSV_HEADER]
    for k, j in enumerate(order):
        img, roi, class_id = test_items[int(j)]
        name = f"{k:05d}.ppm"
        img.save(test_root / name)
        rows.append(_csv_row(name, img, roi, class_id))
    write_text(test_root / "GT-final_test.csv", "\n".join(rows) + "\n", flag="--out")
    write_text(out / "README.txt", flag="--out", text=(
        "SYNTHETIC traffic signs drawn by `drivelab data synth-signs` - NOT the real GTSRB data.\n"
        f"classes={classes} per_class={per_class} test_per_class={n_test} seed={seed} size={size}\n"
        "Same folder layout and CSV format as the official GTSRB release, so the importer, demo\n"
        "and tests exercise the real format. Accuracy on these images says nothing about GTSRB.\n"
        "Importing records `source: synthetic-gtsrb` in the dataset attributes.\n"
    ))
    return SynthSummary(out, classes, classes * per_class, len(test_items))
