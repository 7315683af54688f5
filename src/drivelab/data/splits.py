"""The splits a training run reads: its train and val samples and the augmenter for them.

Opened after the dataset's facts were read and the config completed from them (the one fit
check, `drivelab.processor.completion`), so the episode lists and the layout come from there and
nothing is listed or checked twice. Opening still refuses damaged episodes and a RAM cache that
does not fit, in one line, before a run folder exists.
"""

from __future__ import annotations

from drivelab.config import ExperimentConfig
from drivelab.data.augment import BatchAugmenter, training_augmenter
from drivelab.data.loader import DecodedEpisodes, EpisodeFrameDataset
from drivelab.data.store import DatasetStore
from drivelab.processor.facts import DatasetFacts
from drivelab.processor.state import ProcessorState


def open_splits(
    store: DatasetStore, facts: DatasetFacts, processor: ProcessorState, config: ExperimentConfig,
    decoded: DecodedEpisodes | None = None,
) -> tuple[EpisodeFrameDataset, EpisodeFrameDataset | None, BatchAugmenter | None]:
    """(train, val, augmenter) of ``config.data`` on ``store``.

    ``decoded``: episodes an earlier period of this process decoded (the live trainer's), reused
    by the RAM cache instead of decoded again; val stays whole.
    """
    data = config.data
    augmenter = training_augmenter(config, facts)

    def dataset(split: str, decoded: DecodedEpisodes | None = None) -> EpisodeFrameDataset:
        return EpisodeFrameDataset.of_processor(store, split, facts.episodes[split], processor, decoded)

    train = dataset(data.train_split, decoded if data.cache == "ram" else None)
    if data.cache == "ram":
        train.preload("data.cache=ram")  # before loader workers fork: they share the pages
    val = dataset(data.val_split) if data.val_split is not None else None
    return train, val, augmenter
