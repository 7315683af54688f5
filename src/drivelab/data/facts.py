"""Read a dataset's `DatasetFacts` for one config: every question training asks the store, once.

The store is opened by the caller; this walks its metadata and the few small arrays the config
needs beyond it (class labels for ``kind: class`` heads, the balanced actions' labels, the
train split's moments for the statistics). Frames are never read. What the answers mean for the
config is `drivelab.processor.completion`'s, as a pure function of the facts.
"""

from __future__ import annotations

import numpy as np

from drivelab.config import ExperimentConfig
from drivelab.data.loader import finite_signal, first_episodes
from drivelab.data.records import SPLITS, EpisodeInfo
from drivelab.data.store import DatasetStore
from drivelab.processor.facts import DatasetFacts, EpisodeLabels
from drivelab.processor.statistics import needs_moments


def read_facts(store: DatasetStore, config: ExperimentConfig) -> DatasetFacts:
    """The facts of ``store`` that ``config`` trains on (train split cut at ``data.max_frames``)."""
    data, meta = config.data, store.meta
    world = meta.world_name()  # checked against the config's and a resumed run's by the caller
    train = store.split_episodes(data.train_split)
    if train and data.max_frames is not None:
        train = first_episodes(train, data.max_frames, f"{store.path} {data.train_split!r}")
    splits = {data.train_split: train}
    if data.val_split is not None:
        splits[data.val_split] = store.split_episodes(data.val_split)
    return DatasetFacts(
        source=str(store.path),
        frame_shape=tuple(meta.frame_shape),  # type: ignore[arg-type]
        actions={a.name: a.size for a in meta.actions},
        telemetry={t.name: t.size for t in meta.telemetry},
        action_ranges={a.name: (a.low, a.high) for a in meta.actions},
        attrs=dict(store.attrs),
        episodes={split: tuple(episodes) for split, episodes in splits.items()},
        class_labels=_class_labels(store, config),
        balance_labels=_balance_labels(store, config, train),
        moments=store.moments(train) if train and needs_moments(config) else {},
        world=world,
    )


def _class_labels(store: DatasetStore, config: ExperimentConfig) -> dict[str, dict[str, list[EpisodeLabels]]]:
    """Each class head's labels in the splits its count and checks read.

    Train and val are checked against the count; a store that records no ``num_classes`` takes
    it from its largest label over every split.
    """
    data = config.data
    outputs = [h.output for h in config.model.heads if h.kind == "class"]
    if not outputs:
        return {}
    splits = [data.train_split] + ([data.val_split] if data.val_split else [])
    if store.attrs.get("num_classes") is None:
        splits += [s for s in SPLITS if s not in splits]
    actions = {a.name for a in store.meta.actions}
    return {
        output: {
            split: [(e.index, store.read_array(e.index, f"actions/{output}")) for e in store.split_episodes(split)]
            for split in splits
        }
        for output in outputs if output in actions
    }


def _balance_labels(
    store: DatasetStore, config: ExperimentConfig, train: list[EpisodeInfo]
) -> dict[str, np.ndarray]:
    """The train split's labels of every balanced single-value action, in sample order.

    An output that is no such action is left out: the batch order names it in its refusal.
    """
    balance = config.data.balance
    if balance.scheme == "none":
        return {}
    sizes = {a.name: a.size for a in store.meta.actions}
    outputs = list(balance.outputs) if balance.outputs else list(config.model.outputs)
    return {
        o: np.concatenate([finite_signal(store, e.index, f"actions/{o}").astype(np.float64).reshape(-1)
                           for e in train]) if train else np.zeros(0)
        for o in outputs if sizes.get(o) == 1
    }
