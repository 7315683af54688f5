"""The training split's labels in their bins: what every balancing scheme draws from.

Each balanced output's bins come from a preset fitted to the action's recorded range or from
the config's own list, checked against that range, so a scheme never silently leaves part of an
action's values out of every batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from drivelab.config import BalanceConfig, ExperimentConfig
from drivelab.data.balance import BinnedLabels
from drivelab.data.binning import Binning, preset_binning
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.train.inputs import InputError


def output_binnings(store: DatasetStore, balance: BalanceConfig, outputs: Sequence[str]) -> dict[str, Binning]:
    """Each balanced output's bins: a preset fitted to the action's range, or the config's list."""
    specs = {s.name: s for s in store.meta.actions}
    binnings: dict[str, Binning] = {}
    for name in outputs:
        spec = specs.get(name)
        if spec is None:
            raise InputError(
                f"data.balance.outputs: {name!r} is not an action of {store.path} "
                f"(its actions: {', '.join(sorted(specs))})"
            )
        if spec.size != 1:
            raise InputError(f"data.balance.outputs: {name!r} has {spec.size} values per step; "
                             "balance single-valued actions")
        if isinstance(balance.bins, str):
            binnings[name] = preset_binning(balance.bins, name, spec.low, spec.high)
            continue
        items = balance.bins.get(name)
        if items is None:
            raise InputError(f"data.balance.bins has no list for {name!r}: give one for every "
                             f"balanced output ({', '.join(outputs)}) or a preset (v1, v2)")
        try:
            binning = Binning.from_spec([tuple(i) if isinstance(i, list | tuple) else float(i)
                                         for i in items], name=name)
            binning.check_covers(spec.low, spec.high)
        except DrivelabError as exc:
            raise InputError(f"data.balance.bins.{name}: {exc}") from None
        binnings[name] = binning
    return binnings


def split_labels(dataset: EpisodeFrameDataset, outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """Every sample's label per output, in the dataset's sample order."""
    values: dict[str, list[np.ndarray]] = {o: [] for o in outputs}
    for info in dataset.episodes:
        for o in outputs:  # decode failures and NaN/Inf: one line naming episode and array
            values[o].append(dataset.signal(info.index, f"actions/{o}").astype(np.float64).reshape(-1))
    return {o: np.concatenate(v) for o, v in values.items()}


def balance_outputs(config: ExperimentConfig) -> list[str]:
    """The outputs ``data.balance`` balances (all the policy's outputs unless it names some)."""
    balance = config.data.balance
    return list(balance.outputs) if balance.outputs else list(config.model.outputs)


def binned_train_labels(config: ExperimentConfig, dataset: EpisodeFrameDataset) -> BinnedLabels:
    """The training split's labels in their bins (checked against the dataset's ranges)."""
    outputs = balance_outputs(config)
    binnings = output_binnings(dataset.store, config.data.balance, outputs)
    return BinnedLabels.from_values(split_labels(dataset, outputs), binnings)
