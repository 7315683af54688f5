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
from drivelab.data.augment import BatchAugmenter
from drivelab.data.facts import read_facts
from drivelab.data.loader import DecodedEpisodes, EpisodeFrameDataset
from drivelab.data.splits import open_splits
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.processor.completion import complete, complete_config
from drivelab.processor.facts import DatasetFacts
from drivelab.processor.state import ProcessorState


@dataclass
class CheckedData:
    """The dataset checked against the config, before any sample is opened: the completed
    config, the dataset's facts (read once) and the preprocessing it trains with."""

    config: ExperimentConfig  # history sizes and class counts written out (`processor.completion`)
    facts: DatasetFacts  # what the dataset told, read once
    store: DatasetStore
    processor: ProcessorState  # stack, normalisation, history window, targets (train split)

    @property
    def history_sizes(self) -> dict[str, int]:
        """History signal -> values per step, as the dataset records them."""
        return dict(self.processor.history.sizes)


@dataclass
class TrainInputs(CheckedData):
    """`CheckedData` with its splits opened (`drivelab.data.splits`): what the training loader
    and validation read."""

    train: EpisodeFrameDataset
    val: EpisodeFrameDataset | None
    augmenter: BatchAugmenter | None = None  # ``data.augment``, applied by the training loader

    def describe(self) -> dict[str, object]:
        """What a run records about its data in ``run.json`` (its statistics: ``processor.json``)."""
        return {
            "path": str(self.store.path),
            "frame_shape": list(self.store.meta.frame_shape),
            "train_samples": len(self.train),
            "val_samples": len(self.val) if self.val is not None else 0,
            "history_sizes": self.history_sizes,
        }


def check_data(config: ExperimentConfig, trained: tuple[str | None, str] | None = None) -> CheckedData:
    """Read and check the dataset against the config; raise one `DrivelabError` line if unfit.

    The dataset is read once (`drivelab.data.facts.read_facts`) and the config completed from
    what it told (`drivelab.processor.completion.complete`: the one fit check). Its world must
    be the config's ``live.env`` (when set) and a resumed run's (``trained``: the run's recorded
    env and name): when the data is of another world, that is said instead of the misfit it causes.
    """
    from drivelab.sim.registry import check_data_world  # the simulators load only when asked

    store = DatasetStore.open(config.data.path)
    world, config_env = store.meta.world_name(), config.world_env
    try:
        facts = read_facts(store, config)
        completed, processor = complete(config, facts)
    except DrivelabError:
        check_data_world(world, config_env, trained, str(store.path))  # another world says more
        raise
    check_data_world(world, config_env, trained, str(store.path))
    return CheckedData(completed, facts, store, processor)


def open_inputs(
    config: ExperimentConfig, decoded: DecodedEpisodes | None = None, trained: tuple[str | None, str] | None = None
) -> TrainInputs:
    """`check_data`, then its splits opened: the trainer's inputs in one call."""
    data = check_data(config, trained)
    return TrainInputs(data.config, data.facts, data.store, data.processor,
                       *open_splits(data.store, data.facts, data.processor, data.config, decoded))


def fit_config_to_dataset(config: ExperimentConfig, path: Path) -> tuple[ExperimentConfig, str]:
    """The config with the dataset's history-signal sizes and class counts, and how its frames
    reach the policy.

    The policy always sees ``data.input_size`` (frames are cropped and resized on the device),
    so the dataset decides the signal sizes and the description, never the model's frame shape.
    """
    from drivelab.sim.registry import check_data_world

    store = DatasetStore.open(path)
    check_data_world(store.meta.world_name(), config.world_env, None, str(path))
    height, width, channels = store.meta.frame_shape
    size = "x".join(map(str, config.data.input_size))
    crop = config.data.crop is not None
    if crop or (height, width) != tuple(config.data.input_size):
        source = f"dataset {height}x{width}x{channels},{' cropped,' if crop else ''} resized to {size} on the device"
    else:
        source = f"dataset {height}x{width}x{channels}"
    return complete_config(config, read_facts(store, config)), source
