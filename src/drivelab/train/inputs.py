"""What the trainer feeds the policy: checked datasets and their preprocessing state.

Everything that can be wrong with the data (a missing split, a history signal the dataset does
not record, a crop larger than the frame: `drivelab.processor.check_fit`) is checked here, before
a run folder exists, so a bad combination of config and dataset costs one error line and leaves
nothing behind. The preprocessing itself (statistics, steps) is `drivelab.processor`'s.

Frames travel as uint8 and become floats on the device; the order the samples are read in is
`drivelab.order`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drivelab.config import ExperimentConfig
from drivelab.data.augment import BatchAugmenter, training_augmenter
from drivelab.data.facts import read_facts
from drivelab.data.loader import DecodedEpisodes, EpisodeFrameDataset
from drivelab.data.store import DatasetStore
from drivelab.processor.completion import complete, complete_config
from drivelab.processor.facts import DatasetFacts
from drivelab.processor.state import ProcessorState


@dataclass
class TrainInputs:
    """The completed config, its dataset's facts and samples, and the preprocessing it trains with."""

    config: ExperimentConfig  # history sizes and class counts written out (`processor.completion`)
    facts: DatasetFacts  # what the dataset told, read once
    store: DatasetStore
    train: EpisodeFrameDataset
    val: EpisodeFrameDataset | None
    processor: ProcessorState  # stack, normalisation, history window, targets (train split)
    augmenter: BatchAugmenter | None = None  # ``data.augment``, applied by the training loader

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

    The dataset is read once (`drivelab.data.facts.read_facts`), the config completed from what
    it told (`drivelab.processor.completion.complete`: the one fit check), then its splits are
    opened. ``decoded``: episodes already decoded by an earlier period of this process (the live
    trainer's), reused by the RAM cache instead of decoded again.
    """
    store = DatasetStore.open(config.data.path)
    facts = read_facts(store, config)
    config, processor = complete(config, facts)
    augmenter = training_augmenter(config, facts)
    data = config.data

    def dataset(split: str, decoded: DecodedEpisodes | None = None) -> EpisodeFrameDataset:
        return EpisodeFrameDataset.of_processor(store, split, facts.episodes[split], processor, decoded)

    # val stays whole; decoded episodes are shared only by the RAM cache (it keeps them all anyway)
    train = dataset(data.train_split, decoded if data.cache == "ram" else None)
    if data.cache == "ram":
        train.preload("data.cache=ram")  # before loader workers fork: they share the pages
    val = dataset(data.val_split) if data.val_split is not None else None
    return TrainInputs(config, facts, store, train, val, processor, augmenter)


def fit_config_to_dataset(config: ExperimentConfig, path: Path) -> tuple[ExperimentConfig, str]:
    """The config with the dataset's history-signal sizes and class counts, and how its frames
    reach the policy.

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
    return complete_config(config, read_facts(store, config)), source
