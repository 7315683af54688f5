"""The training split's labels in their bins: what every balancing scheme draws from.

Each balanced output's bins come from a preset fitted to the action's recorded range or from
the config's own list, checked against that range, so a scheme never silently leaves part of an
action's values out of every batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from drivelab.config import BalanceConfig, ExperimentConfig
from drivelab.errors import DrivelabError
from drivelab.order.balance import BinnedLabels
from drivelab.order.binning import Binning, preset_binning
from drivelab.processor.completion import InputError
from drivelab.processor.facts import DatasetFacts


def output_binnings(facts: DatasetFacts, balance: BalanceConfig, outputs: Sequence[str]) -> dict[str, Binning]:
    """Each balanced output's bins: a preset fitted to the action's range, or the config's list."""
    binnings: dict[str, Binning] = {}
    for name in outputs:
        size = facts.actions.get(name)
        if size is None:
            raise InputError(
                f"data.balance.outputs: {name!r} is not an action of {facts.source} "
                f"(its actions: {', '.join(sorted(facts.actions))})"
            )
        if size != 1:
            raise InputError(f"data.balance.outputs: {name!r} has {size} values per step; "
                             "balance single-valued actions")
        low, high = facts.action_ranges[name]
        if isinstance(balance.bins, str):
            binnings[name] = preset_binning(balance.bins, name, low, high)
            continue
        items = balance.bins.get(name)
        if items is None:
            raise InputError(f"data.balance.bins has no list for {name!r}: give one for every "
                             f"balanced output ({', '.join(outputs)}) or a preset (v1, v2)")
        try:
            binning = Binning.from_spec([tuple(i) if isinstance(i, list | tuple) else float(i)
                                         for i in items], name=name)
            binning.check_covers(low, high)
        except DrivelabError as exc:
            raise InputError(f"data.balance.bins.{name}: {exc}") from None
        binnings[name] = binning
    return binnings


def balance_outputs(config: ExperimentConfig) -> list[str]:
    """The outputs ``data.balance`` balances (all the policy's outputs unless it names some)."""
    balance = config.data.balance
    return list(balance.outputs) if balance.outputs else list(config.model.outputs)


def binned_train_labels(config: ExperimentConfig, facts: DatasetFacts) -> BinnedLabels:
    """The training split's labels in their bins (checked against the dataset's ranges)."""
    outputs = balance_outputs(config)
    binnings = output_binnings(facts, config.data.balance, outputs)
    return BinnedLabels.from_values({o: facts.balance_labels[o] for o in outputs}, binnings)
