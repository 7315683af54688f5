"""The training batch order, from (config, dataset facts, rank, world size, resume state).

`build_order` is the one place that decides which order a period reads: sequence rows for a
recurrent policy (``train.bptt``), else the ``data.balance`` scheme's samples (``none``: plain
shuffled epochs). Every order is

- **seeded**: every draw comes from a generator seeded by (seed, epoch) or (seed, batch), so the
  same config reads the same batches;
- **resumable**: the position after N batches is either a pure function of N or a small state
  (per-output buffers, sliding rows' cursors) saved in the checkpoint, so N + resume + N batches
  reads exactly what 2N batches read.

`check_order` is the same order built before a run folder exists, so a config whose data cannot
fill one batch, or whose bins do not cover an action, costs one error line and leaves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from drivelab.config import ConfigError, ExperimentConfig, TrainConfig
from drivelab.config.policy_section import POLICY_KINDS
from drivelab.order.balance import (
    BinnedLabels,
    balance_v1,
    balance_v4,
    inverse_frequency,
    normalized_output,
)
from drivelab.order.base import BatchOrder, episode_lengths
from drivelab.order.buffers import BufferBatchSampler, mix_seed
from drivelab.order.epochs import EpochBatchSampler, SchemeBatchSampler
from drivelab.order.labels import binned_train_labels
from drivelab.order.sequences import (
    FullSampler,
    build_sampler,
    check_sequence_data,
    warn_if_cut_drops,
)
from drivelab.processor.facts import DatasetFacts


def build_order(
    config: ExperimentConfig,
    facts: DatasetFacts,
    rank: int,
    world_size: int,
    state: dict[str, Any] | None = None,
) -> BatchOrder:
    """The order of the training split for ``config`` on this rank, where ``state`` stood.

    ``state`` is a resumed run's trainer state: its batch count (and buffers, or sliding rows)
    position the order exactly where the interrupted run was.
    """
    done = int(state["batch"]) if state is not None else 0
    # a kind that trains on sequences (`drivelab.config.POLICY_KINDS`) has a bptt mode: the
    # config refuses any other pairing, so the mode alone decides here, below the models
    if config.train.bptt.mode != "none":
        lengths = check_sequence_data(facts, config.data.train_split)
        return build_sampler(
            config.train.bptt, lengths, config.train.batch_size, config.seed, rank, world_size,
            state=state.get("sequence") if state is not None else None, batches_done=done,
        )
    return frame_order(config, facts, rank, world_size, done, state.get("sampler") if state else None)


def check_order(config: ExperimentConfig, facts: DatasetFacts, world_size: int) -> BatchOrder:
    """Rank 0's order of a new run, checked: what `train` sizes the run with before launching.

    Sequences must pass the frame order's checks too (enough samples for one batch), and
    ``full``/``cut`` warns when it would drop many frames. A policy kind that reads a window of
    steps (`drivelab.config.KindSpec.window`: the transformer's) needs one training episode at
    least that long, or the window would never fill.
    """
    frames = frame_order(config, facts, 0, world_size)
    if config.train.bptt.mode == "none":
        order = frames
    else:
        order = build_order(config, facts, 0, world_size)
        if isinstance(order, FullSampler):
            warn_if_cut_drops(order)
    kind = POLICY_KINDS[config.model.kind_name]
    if kind.window is not None and kind.section is not None:
        steps = int(getattr(getattr(config.model, kind.section), kind.window))
        split = config.data.train_split
        longest = int(max(episode_lengths(facts, split), default=0))
        if steps > longest:
            raise ConfigError(
                f"model.{kind.section}.{kind.window} {steps} is longer than every {split!r} episode (the "
                f"longest has {longest} frames): its window would never fill; use a window of at most {longest}")
    return order


def total_batches(train: TrainConfig, order: BatchOrder) -> int:
    """The batch a run trains to: ``train.max_batches``, or ``train.epochs`` epochs of ``order``."""
    if train.max_batches is not None:
        return train.max_batches
    assert train.epochs is not None
    return train.epochs * order.batches_per_epoch


def frame_order(
    config: ExperimentConfig,
    facts: DatasetFacts,
    rank: int,
    world_size: int,
    done: int = 0,
    saved: dict[str, Any] | None = None,
) -> EpochBatchSampler | SchemeBatchSampler | BufferBatchSampler:
    """The order of single samples for ``data.balance`` from batch ``done`` (``saved``: buffers)."""
    balance = config.data.balance
    batch_size, seed = config.train.batch_size, config.seed
    if balance.scheme == "none":
        samples = int(episode_lengths(facts, config.data.train_split).sum())
        return EpochBatchSampler(samples, batch_size, seed, rank, world_size, start=done)
    binned = binned_train_labels(config, facts)
    scheme = balance.scheme
    if scheme in ("v2", "v3"):
        return BufferBatchSampler(binned, balance, batch_size, seed, helper=scheme == "v2",
                                  rank=rank, world_size=world_size, start=done, state=saved)
    return SchemeBatchSampler(scheme_order(config, binned, batch_size * world_size), batch_size, rank,
                              world_size, start=done, what=f"data.balance.scheme {scheme}")


def scheme_order(config: ExperimentConfig, binned: BinnedLabels, global_batch: int) -> Callable[[int], np.ndarray]:
    """Epoch -> the epoch's balanced sample order, for the epoch-based schemes."""
    balance, seed = config.data.balance, config.seed
    scheme = balance.scheme
    if scheme == "v1":
        def order(epoch: int) -> np.ndarray:
            rng = np.random.default_rng([seed, epoch])
            chosen = balance_v1(binned, mix_seed(seed, epoch), balance.rounds).indices
            return rng.permutation(chosen)
    elif scheme == "v4":
        def order(epoch: int) -> np.ndarray:
            rng = np.random.default_rng([seed, epoch])
            chosen = balance_v4(binned, mix_seed(seed, epoch), candidates=balance.candidates,
                                skip_empty=balance.skip_empty)
            return rng.permutation(chosen)
    elif scheme == "normalized_output":
        def order(epoch: int) -> np.ndarray:  # already laid out batch by batch
            return normalized_output(binned, mix_seed(seed, epoch), global_batch, balance.cap)
    else:  # inverse_frequency
        weights = inverse_frequency(binned, balance.power, balance.joint)
        p = weights / weights.sum()

        def order(epoch: int) -> np.ndarray:
            rng = np.random.default_rng([seed, epoch])
            return rng.choice(binned.n, size=binned.n, replace=True, p=p)
    return order
