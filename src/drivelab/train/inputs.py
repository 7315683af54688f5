"""What the trainer feeds the policy: checked datasets and device-side frames.

Everything that can be wrong with the data (a missing split, a history signal the dataset does
not record, a crop larger than the frame) is checked here, before a run folder exists, so a bad
combination of config and dataset costs one error line and leaves nothing behind. Frames travel
as uint8 and become floats on the device (crop, scale, resize), where that work is cheapest;
the order the samples are read in is `drivelab.train.batches`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from drivelab.config import ExperimentConfig
from drivelab.data.loader import EpisodeFrameDataset, normalize_frames
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.train.speed import to_memory_format


class InputError(DrivelabError):
    """The config asks for data the dataset cannot provide."""


@dataclass
class TrainInputs:
    """The opened dataset, its train/val samples and the facts the policy is built from."""

    store: DatasetStore
    train: EpisodeFrameDataset
    val: EpisodeFrameDataset | None
    history_sizes: dict[str, int]  # history signal -> values per step, from the dataset
    frame_mean: tuple[float, ...] | None  # per RGB channel in [0, 1] units (train split)
    frame_std: tuple[float, ...] | None
    history_mean: tuple[float, ...] = ()  # per history component (train split)
    history_std: tuple[float, ...] = ()
    target_mean: dict[str, float] = field(default_factory=dict)  # standardised heads (train split)
    target_std: dict[str, float] = field(default_factory=dict)

    @property
    def dataset_frame_shape(self) -> tuple[int, int, int]:
        return tuple(self.store.meta.frame_shape)  # type: ignore[return-value]

    def describe(self) -> dict[str, object]:
        """What a run records about its data (`run.json`), e.g. for the evaluator's frames."""
        return {
            "path": str(self.store.path),
            "frame_shape": list(self.dataset_frame_shape),
            "train_samples": len(self.train),
            "val_samples": len(self.val) if self.val is not None else 0,
            "history_sizes": self.history_sizes,
            "frame_mean": list(self.frame_mean) if self.frame_mean else None,
            "frame_std": list(self.frame_std) if self.frame_std else None,
            "history_mean": list(self.history_mean),
            "history_std": list(self.history_std),
            "target_mean": dict(self.target_mean),
            "target_std": dict(self.target_std),
        }


def open_inputs(config: ExperimentConfig) -> TrainInputs:
    """Open and check the dataset against the config; raise one `DrivelabError` line if unfit."""
    data = config.data
    store = DatasetStore.open(data.path)
    meta = store.meta
    height, width, channels = meta.frame_shape
    if channels != 3:
        raise InputError(f"{data.path} holds {channels}-channel frames; policies read RGB (3)")
    crop = data.crop
    if crop is not None and (crop.top + crop.bottom >= height or crop.left + crop.right >= width):
        raise InputError(
            f"data.crop (top {crop.top}, bottom {crop.bottom}, left {crop.left}, right "
            f"{crop.right}) leaves nothing of the dataset's {height}x{width} frames: crop less"
        )
    history = config.model.history
    history_sizes = dataset_history_sizes(config, store)
    actions = {s.name: s.size for s in meta.actions}
    for head in config.model.heads:
        if head.output not in actions:
            raise InputError(
                f"model.heads: output {head.output!r} is not an action of {data.path} "
                f"(its actions: {', '.join(sorted(actions))})"
            )
        if actions[head.output] != 1:
            raise InputError(
                f"model.heads: action {head.output!r} has {actions[head.output]} values per "
                "step; a head predicts one"
            )

    def dataset(split: str) -> EpisodeFrameDataset:
        return EpisodeFrameDataset(
            store,
            split,
            outputs=config.model.outputs,
            frames=data.frames,
            history_signals=history.signals if history else (),
            history_length=history.length if history else 0,
            delta_outputs=[h.output for h in config.model.heads if h.delta],
        )

    if not store.split_episodes(data.train_split):
        raise InputError(
            f"{data.path} has no {data.train_split!r} episodes to train on: collect more episodes"
        )
    train = dataset(data.train_split)
    if data.cache == "ram":
        train.preload("data.cache=ram")  # before loader workers fork: they share the pages
    val = None
    if data.val_split is not None:
        if not store.split_episodes(data.val_split):
            raise InputError(
                f"{data.path} has no {data.val_split!r} episodes to validate on: collect with "
                f"--val-episodes K, or set data.val_split=null to train without validation"
            )
        val = dataset(data.val_split)
    mean = std = None
    if data.normalization == "scaled":
        moments = store.moments(train.episodes).get("frames")
        if moments is None or moments.count == 0:
            raise InputError(f"{data.path} has no frame statistics; normalization 'scaled' needs them")
        mean = tuple(m / 255.0 for m in moments.mean)
        std = tuple(max(s / 255.0, 1e-6) for s in moments.std)
    h_mean, h_std = history_statistics(store, train, history.signals if history else [])
    check_augmentation(config, store, history_sizes)
    t_mean, t_std = target_statistics(config, store, train)
    check_finite_statistics(store, {
        "frame mean/std": [*(mean or ()), *(std or ())],
        "history mean/std": [*h_mean, *h_std],
        "action mean/std": [*t_mean.values(), *t_std.values()],
    })
    return TrainInputs(store, train, val, history_sizes, mean, std, h_mean, h_std, t_mean, t_std)


def check_finite_statistics(store: DatasetStore, stats: dict[str, Sequence[float]]) -> None:
    """Refuse NaN/Inf in the dataset's recorded moments before they scale every input.

    Non-finite statistics would make every loss NaN, and the trainer would blame the learning
    rate; the moments are committed with each episode, so the dataset is what is damaged.
    """
    for what, values in stats.items():
        if not all(math.isfinite(v) for v in values):
            raise InputError(
                f"{store.path}: the {what} recorded in its episodes' moments are not finite, so "
                f"every input would be NaN: run `drivelab data verify {store.path}`"
            )


def target_statistics(
    config: ExperimentConfig, store: DatasetStore, train: EpisodeFrameDataset
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean/std of every standardised head's action over the training split."""
    heads = [h.output for h in config.model.heads if h.standardize]
    if not heads:
        return {}, {}
    moments = store.moments(train.episodes)
    mean = {o: float(moments[f"actions/{o}"].mean[0]) for o in heads}
    std = {o: max(float(moments[f"actions/{o}"].std[0]), 1e-6) for o in heads}
    return mean, std


def check_augmentation(config: ExperimentConfig, store: DatasetStore, history_sizes: dict[str, int]) -> None:
    """Fail now (one line) if ``data.augment`` names signals the dataset does not record."""
    if config.data.augment is None:
        return
    from drivelab.data.augment import resolve_flip_targets

    meta = store.meta
    resolve_flip_targets(
        config.data.augment.flip_negate,
        config.model.outputs,
        {a.name: a.size for a in meta.actions},
        list(history_sizes),
        {t.name: t.size for t in meta.telemetry},
    )
    aug = config.data.augment
    if aug.translate and aug.translate_steering and aug.translate_output not in config.model.outputs:
        raise InputError(f"data.augment.translate_output: {aug.translate_output!r} is not an "
                         f"output of the policy ({', '.join(config.model.outputs)})")


def history_statistics(
    store: DatasetStore, train: EpisodeFrameDataset, signals: Sequence[str]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of each history component over the training split, for standardisation.

    Telemetry mixes scales (speed reaches ~100 m/s, steering stays within 0.4): standardised
    inputs keep an LSTM's gates out of saturation and let one learning rate fit every signal.
    """
    if not signals:
        return (), ()
    moments = store.moments(train.episodes)
    mean: list[float] = []
    std: list[float] = []
    for name in signals:
        m = moments[f"telemetry/{name}"]
        mean += m.mean
        std += [max(v, 1e-6) for v in m.std]
    return tuple(mean), tuple(std)


def dataset_history_sizes(config: ExperimentConfig, store: DatasetStore) -> dict[str, int]:
    """Values per step of each configured history signal, as the dataset records them."""
    history = config.model.history
    if history is None:
        return {}
    available = {s.name: s.size for s in store.meta.telemetry}
    missing = [s for s in history.signals if s not in available]
    if missing:
        raise InputError(
            f"model.history.signals: {', '.join(missing)} not recorded in {store.path} "
            f"(its telemetry: {', '.join(sorted(available))})"
        )
    sizes: dict[str, int] = {}
    for name in history.signals:
        wanted = history.signal_sizes.get(name)
        if wanted is not None and wanted != available[name]:
            raise InputError(
                f"model.history.signal_sizes.{name}: {wanted}, but {store.path} records "
                f"{available[name]} value(s) per step"
            )
        sizes[name] = available[name]
    return sizes


def fit_config_to_dataset(config: ExperimentConfig, path: Path) -> tuple[ExperimentConfig, str]:
    """The config with the dataset's history-signal sizes, and how its frames reach the policy.

    The policy always sees ``data.input_size`` (frames are cropped and resized on the device),
    so the dataset decides the signal sizes and the description, never the model's frame shape.
    """
    store = DatasetStore.open(path)
    height, width, channels = store.meta.frame_shape
    size = "x".join(map(str, config.data.input_size))
    crop = config.data.crop is not None
    if crop or (height, width) != tuple(config.data.input_size):
        source = f"dataset {height}x{width}x{channels},{' cropped,' if crop else ''} resized to {size} on the device"
    else:
        source = f"dataset {height}x{width}x{channels}"
    from drivelab.data.classes import with_dataset_classes

    config = with_dataset_classes(config, store)
    return with_history_sizes(config, dataset_history_sizes(config, store)), source


def with_history_sizes(config: ExperimentConfig, sizes: dict[str, int]) -> ExperimentConfig:
    """The config with every history signal's size written out, so config.yaml is complete."""
    if config.model.history is None or not sizes:
        return config
    history = config.model.history.model_copy(update={"signal_sizes": dict(sizes)})
    model = config.model.model_copy(update={"history": history})
    return config.model_copy(update={"model": model})


# ---------------------------------------------------------------------------- inputs on device
class InputPipeline:
    """A batch on the device -> the policy's inputs.

    Frames: uint8 [B, 3k, H, W] -> crop, normalise, resize. History: float [B, T, S] ->
    standardised with the training split's statistics. The evaluator's runtime builds the same
    object from the numbers the run recorded, so a policy drives on exactly what it trained on.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        source_size: tuple[int, int],
        history_mean: Sequence[float] = (),
        history_std: Sequence[float] = (),
        channels_last: bool = False,
    ) -> None:
        data = config.data
        self.channels_last = channels_last  # NHWC frames for NHWC convolutions (train.channels_last)
        self.mode = data.normalization
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        crop = data.crop
        h, w = source_size
        if crop is None:
            self.rows, self.cols = slice(0, h), slice(0, w)
        else:
            self.rows = slice(crop.top, h - crop.bottom)
            self.cols = slice(crop.left, w - crop.right)
        cropped = (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)
        self.size = tuple(data.input_size)
        self.resize = cropped != self.size
        self.crop = (h, w) != cropped
        self._h_mean = torch.tensor(list(history_mean), dtype=torch.float32)
        self._h_std = torch.tensor(list(history_std), dtype=torch.float32)

    def frames(self, frames: torch.Tensor) -> torch.Tensor:
        if self.crop:
            frames = frames[:, :, self.rows, self.cols]
        x = normalize_frames(frames, self.mode, self.mean, self.std)
        if self.resize:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return to_memory_format(x, self.channels_last)

    def history(self, history: torch.Tensor | None) -> torch.Tensor | None:
        if history is None or self._h_mean.numel() == 0:
            return history
        if self._h_mean.device != history.device:
            self._h_mean = self._h_mean.to(history.device)
            self._h_std = self._h_std.to(history.device)
        return (history - self._h_mean) / self._h_std

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.frames(batch["frames"]), self.history(batch.get("history"))
