"""What the trainer feeds the policy: checked datasets and their preprocessing state.

Everything that can be wrong with the data (a missing split, a history signal the dataset does
not record, a crop larger than the frame: `drivelab.processor.check_fit`) is checked here, before
a run folder exists, so a bad combination of config and dataset costs one error line and leaves
nothing behind. The preprocessing itself (statistics, steps) is `drivelab.processor`'s.

Frames travel as uint8 and become floats on the device; the order the samples are read in is
`drivelab.train.batches`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drivelab.config import ExperimentConfig
from drivelab.data.loader import DecodedEpisodes, EpisodeFrameDataset
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.processor.fit import DataSpec, PolicyNeeds, check_fit
from drivelab.processor.state import ProcessorState
from drivelab.processor.statistics import needs_moments, training_statistics


class InputError(DrivelabError):
    """The config asks for data the dataset cannot provide."""


@dataclass
class TrainInputs:
    """The opened dataset, its train/val samples and the preprocessing the policy trains with."""

    store: DatasetStore
    train: EpisodeFrameDataset
    val: EpisodeFrameDataset | None
    processor: ProcessorState  # stack, normalisation, history window, targets (train split)

    @property
    def history_sizes(self) -> dict[str, int]:
        """History signal -> values per step, as the dataset records them."""
        return dict(self.processor.history.sizes)

    def describe(self) -> dict[str, object]:
        """What a run records about its data in ``run.json`` (its statistics: ``processor.json``)."""
        return {
            "path": str(self.store.path),
            "frame_shape": list(self.store.meta.frame_shape),
            "train_samples": len(self.train),
            "val_samples": len(self.val) if self.val is not None else 0,
            "history_sizes": self.history_sizes,
        }


def open_inputs(config: ExperimentConfig, decoded: DecodedEpisodes | None = None) -> TrainInputs:
    """Open and check the dataset against the config; raise one `DrivelabError` line if unfit.

    ``decoded``: episodes already decoded by an earlier period of this process (the live
    trainer's), reused by the RAM cache instead of decoded again.
    """
    data = config.data
    store = DatasetStore.open(data.path)
    history = config.model.history
    history_sizes = check_fit(
        DataSpec.of_dataset(store), PolicyNeeds.of_config(config), who="the config", error=InputError
    )

    def dataset(split: str, max_frames: int | None = None,
                decoded: DecodedEpisodes | None = None) -> EpisodeFrameDataset:
        return EpisodeFrameDataset(
            store,
            split,
            outputs=config.model.outputs,
            frames=data.frames,
            history_signals=history.signals if history else (),
            history_length=history.length if history else 0,
            delta_outputs=[h.output for h in config.model.heads if h.delta],
            max_frames=max_frames,
            decoded=decoded,
        )

    if not store.split_episodes(data.train_split):
        raise InputError(
            f"{data.path} has no {data.train_split!r} episodes to train on: collect more episodes"
        )
    # val stays whole; decoded episodes are shared only by the RAM cache (it keeps them all anyway)
    train = dataset(data.train_split, data.max_frames, decoded if data.cache == "ram" else None)
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
    check_augmentation(config, store, history_sizes)
    moments = store.moments(train.episodes) if needs_moments(config) else {}
    statistics = training_statistics(config, moments, str(store.path))
    processor = ProcessorState.from_config(config, store.meta.frame_shape, history_sizes, statistics)
    return TrainInputs(store, train, val, processor)


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
    spec = DataSpec.of_dataset(store)
    sizes = check_fit(spec, PolicyNeeds.of_config(config), who="the config", error=InputError)
    return with_history_sizes(config, sizes), source


def with_history_sizes(config: ExperimentConfig, sizes: dict[str, int]) -> ExperimentConfig:
    """The config with every history signal's size written out, so config.yaml is complete."""
    if config.model.history is None or not sizes:
        return config
    history = config.model.history.model_copy(update={"signal_sizes": dict(sizes)})
    model = config.model.model_copy(update={"history": history})
    return config.model_copy(update={"model": model})
