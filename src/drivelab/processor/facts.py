"""What a training run needs to know about its dataset, read once: `DatasetFacts`.

Completing a config (history sizes, class counts), checking that it fits, computing the
processor's statistics and sizing the batch orders all ask the dataset the same few questions.
They used to ask the store each on its own (three fit checks, four walks over a split's
episodes before the first batch); now `drivelab.data.facts.read_facts` answers them in one
pass and everything downstream is a pure function of (config, facts). The facts are plain
values: this module sits below the store and knows it only by what it read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivelab.processor.fit import DataSpec

#: One episode's labels of a classification output: (episode index, float labels [T]).
EpisodeLabels = tuple[int, np.ndarray]


@dataclass(frozen=True)
class DatasetFacts:
    """One dataset seen through a config: shapes, signal sizes, splits, labels and statistics.

    ``episodes`` lists the train split's episodes (after ``data.max_frames``) and the val
    split's, as the store listed them (`drivelab.data.records.EpisodeInfo`); ``class_labels`` each ``kind: class`` head's labels
    per split (train and val, every split where the store records no class count);
    ``balance_labels`` the train split's raw labels of each balanced single-value action, in
    sample order (empty without ``data.balance``); ``moments`` the train split's merged signal
    moments where the statistics need them.
    """

    source: str  # the dataset path, as messages name it
    frame_shape: tuple[int, int, int]
    actions: Mapping[str, int]  # action -> values per step
    telemetry: Mapping[str, int]  # telemetry signal -> values per step
    action_ranges: Mapping[str, tuple[float | None, float | None]]  # recorded (low, high)
    attrs: Mapping[str, Any] = field(default_factory=dict)  # the store's root attrs (task, classes)
    episodes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    class_labels: Mapping[str, Mapping[str, list[EpisodeLabels]]] = field(default_factory=dict)
    balance_labels: Mapping[str, np.ndarray] = field(default_factory=dict)
    moments: Mapping[str, Any] = field(default_factory=dict)  # key -> `data.stats.SignalMoments`

    @property
    def spec(self) -> DataSpec:
        """The data side of `drivelab.processor.fit.check_fit`."""
        return DataSpec(self.source, self.frame_shape, dict(self.actions), dict(self.telemetry))
