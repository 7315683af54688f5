"""Seeded augmentation of whole uint8 batches, applied in the loader's worker processes.

A driving frame can be mirrored if the labels are mirrored with it: steering changes sign, and
so does anything lateral in the history (the last executed steering, the purpose bearing). Small
horizontal shifts imitate a car slightly off its line and, with a steering correction, teach
recovery (the NVIDIA/PilotNet trick). Colour jitter, noise and blur make the policy less fussy
about lighting. Everything works on the uint8 batch the loader already built — no float copy of
a frame survives the call — and every random choice comes from a generator seeded by
(seed, batch number), so a batch is augmented identically whichever worker reads it and after a
resume.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from drivelab.config import AugmentConfig, ExperimentConfig
from drivelab.errors import DrivelabError
from drivelab.processor.completion import InputError
from drivelab.processor.facts import DatasetFacts

_COMPONENT = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)(\[(?P<index>\d+)\])?$")


class AugmentError(DrivelabError):
    """The augmentation names something the dataset or policy does not have."""


@dataclass(frozen=True)
class FlipTargets:
    """What a mirror negates: target outputs and history columns."""

    outputs: tuple[str, ...]
    history_columns: tuple[int, ...]


def resolve_flip_targets(
    names: Sequence[str],
    outputs: Sequence[str],
    actions: dict[str, int],
    history_signals: Sequence[str],
    telemetry: dict[str, int],
) -> FlipTargets:
    """Map ``flip_negate`` names to the batch's target keys and history columns.

    A name must be an action or telemetry signal of the dataset (else it is a typo); one that the
    policy does not read (an output without a head, a signal outside the history) is simply not
    in the batch and needs no negation.
    """
    out: list[str] = []
    columns: list[int] = []
    offsets: dict[str, int] = {}
    at = 0
    for signal in history_signals:
        offsets[signal] = at
        at += telemetry[signal]
    for raw in names:
        match = _COMPONENT.match(raw)
        if match is None:
            raise AugmentError(f"data.augment.flip_negate: {raw!r} is not a signal name or name[i]")
        name, index = match["name"], match["index"]
        if name not in actions and name not in telemetry:
            raise AugmentError(
                f"data.augment.flip_negate: {name!r} is neither an action nor telemetry of the "
                f"dataset (actions: {', '.join(sorted(actions))}; telemetry: "
                f"{', '.join(sorted(telemetry))})"
            )
        size = actions.get(name, telemetry.get(name, 1))
        if index is not None and int(index) >= size:
            raise AugmentError(f"data.augment.flip_negate: {raw!r} but {name} has {size} value(s)")
        if name in actions and name in outputs and (index is None or size == 1):
            out.append(name)
        if name in offsets:
            comps = range(telemetry[name]) if index is None else [int(index)]
            columns += [offsets[name] + c for c in comps]
    return FlipTargets(tuple(dict.fromkeys(out)), tuple(sorted(set(columns))))


def training_augmenter(config: ExperimentConfig, facts: DatasetFacts) -> BatchAugmenter | None:
    """The augmenter ``data.augment`` asks for on this dataset (None without one), checked now.

    Built before a run folder exists, so a ``flip_negate`` typo or a ``translate_output`` the
    policy lacks is one line; the training loader applies it (`drivelab.data.batch_loader`).
    """
    aug = config.data.augment
    if aug is None:
        return None
    history = config.model.history
    flip = resolve_flip_targets(
        aug.flip_negate, config.model.outputs, dict(facts.actions),
        list(history.signals) if history else [], dict(facts.telemetry),
    )
    if aug.translate and aug.translate_steering and aug.translate_output not in config.model.outputs:
        raise InputError(f"data.augment.translate_output: {aug.translate_output!r} is not an "
                         f"output of the policy ({', '.join(config.model.outputs)})")
    ranges = {name: (low if low is not None else -1.0, high if high is not None else 1.0)
              for name, (low, high) in facts.action_ranges.items()}
    return BatchAugmenter(aug, config.seed, flip, ranges)


class BatchAugmenter:
    """Augments one batch dict (frames uint8 [B, 3k, H, W], targets, history) in place."""

    def __init__(
        self,
        config: AugmentConfig,
        seed: int,
        flip_targets: FlipTargets,
        action_ranges: dict[str, tuple[float, float]],
    ) -> None:
        self.config = config
        self.seed = seed
        self.flip_targets = flip_targets
        self.action_ranges = action_ranges
        self._noise_bank: np.ndarray | None = None  # int16 [16, 3k, H, W], made on first use

    def __call__(self, batch: dict[str, torch.Tensor], number: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        rng = np.random.default_rng([self.seed, 7727, number])
        frames = batch["frames"].numpy()  # shares memory: edits land in the batch
        n = frames.shape[0]
        if cfg.flip:
            self._flip(batch, frames, rng.random(n) < cfg.flip)
        if cfg.translate:
            self._translate(batch, frames, rng.integers(-cfg.translate, cfg.translate + 1, size=n))
        if cfg.brightness or cfg.contrast or cfg.colour:
            self._colour(frames, rng)
        if cfg.blur:
            self._blur(frames, rng.random(n) < cfg.blur)
        if cfg.noise:
            self._noise(frames, rng)
        return batch

    # ------------------------------------------------------------------ operations
    def _flip(self, batch: dict[str, torch.Tensor], frames: np.ndarray, chosen: np.ndarray) -> None:
        if not chosen.any():
            return
        frames[chosen] = frames[chosen][..., ::-1]
        mask = torch.from_numpy(chosen)
        for name in self.flip_targets.outputs:
            target = batch[f"target/{name}"]
            target[mask] = -target[mask]
        history = batch.get("history")
        if history is not None and self.flip_targets.history_columns:
            cols = list(self.flip_targets.history_columns)
            rows = history[mask]
            rows[..., cols] = -rows[..., cols]
            history[mask] = rows

    def _translate(self, batch: dict[str, torch.Tensor], frames: np.ndarray, shifts: np.ndarray) -> None:
        width = frames.shape[-1]
        for i, dx in enumerate(shifts.tolist()):
            if dx > 0:  # picture moves right; the left edge column repeats
                frames[i, ..., dx:] = frames[i, ..., : width - dx].copy()
                frames[i, ..., :dx] = frames[i, ..., dx : dx + 1]
            elif dx < 0:
                frames[i, ..., : width + dx] = frames[i, ..., -dx:].copy()
                frames[i, ..., width + dx :] = frames[i, ..., width + dx - 1 : width + dx]
        gain = self.config.translate_steering
        key = f"target/{self.config.translate_output}"
        if gain and key in batch:
            lo, hi = self.action_ranges.get(self.config.translate_output, (-1.0, 1.0))
            target = batch[key]
            correction = torch.from_numpy(shifts.astype(np.float32) * gain).reshape(-1, *[1] * (target.dim() - 1))
            target.copy_((target + correction).clamp(lo, hi))

    def _colour(self, frames: np.ndarray, rng: np.random.Generator) -> None:
        """Brightness x colour gain x contrast about the frame's mean: one affine map per sample
        and channel, ``x * a + b``, in a single float32 pass (rounded back to uint8)."""
        cfg = self.config
        n, channels = frames.shape[:2]
        k = channels // 3
        brightness = 1.0 + rng.uniform(-cfg.brightness, cfg.brightness, n)
        contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast, n)
        colour = 1.0 + rng.uniform(-cfg.colour, cfg.colour, (n, 3))
        gain = np.tile(brightness[:, None] * colour, (1, k))  # [n, 3k]
        if cfg.contrast:
            mean = frames.reshape(n, -1).sum(axis=1, dtype=np.int64) / frames[0].size
        else:
            mean = np.zeros(n)
        # ((x - mean) * contrast + mean) * gain = x * a + b
        scale = (contrast[:, None] * gain).astype(np.float32)[:, :, None, None]
        shift = (mean * (1.0 - contrast))[:, None] * gain + 0.5  # + 0.5: round, not truncate
        x = frames.astype(np.float32)
        x *= scale
        x += shift.astype(np.float32)[:, :, None, None]
        np.clip(x, 0, 255, out=x)
        frames[...] = x.astype(np.uint8)

    def _noise(self, frames: np.ndarray, rng: np.random.Generator) -> None:
        """Gaussian pixel noise from a bank of fields drawn once (from the seed), each used
        with a random field, sign and mirror: drawing fresh normals costs more than the rest of
        the augmentation together, and 64 patterns are plenty for a regulariser."""
        shape = frames.shape[1:]
        if self._noise_bank is None or self._noise_bank.shape[1:] != shape:
            bank = np.random.default_rng([self.seed, 7741]).standard_normal((16, *shape))
            self._noise_bank = np.rint(bank * self.config.noise).astype(np.int16)
        n = frames.shape[0]
        pick = rng.integers(0, len(self._noise_bank), n)
        sign = rng.choice(np.array([-1, 1], np.int16), n)
        mirror = rng.random(n) < 0.5
        for i in range(n):
            field = self._noise_bank[pick[i]]
            field = field[..., ::-1] if mirror[i] else field
            noisy = frames[i].astype(np.int16) + sign[i] * field
            frames[i] = np.clip(noisy, 0, 255).astype(np.uint8)

    def _blur(self, frames: np.ndarray, chosen: np.ndarray) -> None:
        if not chosen.any():
            return
        x = frames[chosen].astype(np.uint16)
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        h, w = x.shape[-2:]
        total = sum(padded[..., r : r + h, c : c + w] for r in range(3) for c in range(3))
        frames[chosen] = (total // 9).astype(np.uint8)


class AugmentedFrames(torch.utils.data.Dataset):
    """A dataset view whose batches (`BatchRequest`: number + indices) come out augmented."""

    def __init__(self, base: Any, augmenter: BatchAugmenter) -> None:
        self.base = base
        self.augmenter = augmenter

    def __len__(self) -> int:
        return len(self.base)

    def __getitems__(self, request: Any) -> dict[str, torch.Tensor]:
        number, indices = request
        batch = self.base.__getitems__(indices)
        return self.augmenter(batch, number)


class BatchRequest(NamedTuple):
    """A batch's sample indices with its global batch number (seeds the batch's augmentation)."""

    number: int
    indices: list[int]


def numbered(batches: Iterable[Any], start: int) -> Iterator[BatchRequest]:
    """Tag each index list of ``batches`` with its batch number, counting from ``start``."""
    for offset, indices in enumerate(batches):
        yield BatchRequest(start + offset, list(indices))


class NumberedBatches:
    """A batch order whose batches carry their number: what `AugmentedFrames` reads.

    A DataLoader iterates it once; the number is the batch's place in the whole run (``start``:
    the batches a resumed run had done), never worker state.
    """

    def __init__(self, base: Iterable[Any], start: int) -> None:
        self.base = base
        self.start = start

    def __iter__(self) -> Iterator[BatchRequest]:
        return numbered(self.base, self.start)
