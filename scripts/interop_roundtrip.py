"""Round-trip figures: drivelab -> LeRobot -> drivelab; frames PSNR, every signal compared exactly.

    python scripts/interop_roundtrip.py ORIGINAL_DS REIMPORTED_DS [...]
"""

import sys
from pathlib import Path

import numpy as np

from drivelab.data.store import DatasetStore


def arrays(store: DatasetStore, index: int) -> dict[str, np.ndarray]:
    """Every stored array of one episode: frames, reward, perturbed, each action and telemetry."""
    root = store.path / "episodes" / f"{index:06d}"
    keys = ["frames", "reward", "perturbed"]
    for group in ("actions", "telemetry"):
        keys += [f"{group}/{p.name}" for p in sorted((root / group).iterdir()) if p.is_dir()]
    return {k: store.read_array(index, k) for k in keys}


def compare(src: DatasetStore, back: Path) -> None:
    """Print the frames' PSNR and whether every signal came back exactly."""
    b = DatasetStore.open(back)
    ea, eb = src.episodes(), b.episodes()
    squared, values, same_frames, exact, signals = 0.0, 0, 0, True, 0
    for x, y in zip(ea, eb, strict=True):
        a, c = arrays(src, x.index), arrays(b, y.index)
        fa, fb = a.pop("frames").astype(np.float64), c.pop("frames").astype(np.float64)
        squared += float(((fa - fb) ** 2).sum())
        values += fa.size
        same_frames += int((fa == fb).all())
        for key, value in a.items():
            signals += 1
            if key not in c or not np.array_equal(value, c[key]):
                exact = False
                print("  differs:", key)
    psnr = float("inf") if squared == 0 else 10 * np.log10(255**2 / (squared / values))
    print(f"{back.name}: {len(ea)} episodes, frames PSNR {psnr:.2f} dB (identical in {same_frames}/"
          f"{len(ea)} episodes), {signals // len(ea)} signals per episode, all exact: {exact}")


if __name__ == "__main__":
    original = DatasetStore.open(Path(sys.argv[1]))
    for folder in sys.argv[2:]:
        compare(original, Path(folder))
