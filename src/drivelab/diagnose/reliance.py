"""Input reliance: how much worse each head gets when one input group is destroyed.

For each group (the frames; each history signal) the group alone is permuted across the split
(each sample gets another sample's frames, or another's past speed), and separately replaced by
its training mean (blank frames; the history signal held at the training split's mean, the
statistic the run standardises with). The rise in each head's loss and MAE is a per-sample
difference, so its bootstrap interval (resampling samples) says whether the effect is real.
Shares of the total permutation effect make the groups comparable across runs: a head whose
loss moves only when the history is scrambled is not using the road.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from drivelab.diagnose.forward import run_policy
from drivelab.diagnose.samples import SplitSamples
from drivelab.evaluate.overrides import InputOverride
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.models.objectives import HeadObjective

FRAMES = "frames"


@dataclass
class Effect:
    """The mean rise of a head's loss / MAE under one perturbation, with its 95 % bootstrap interval."""

    loss: float
    loss_low: float
    loss_high: float
    mae: float
    mae_low: float
    mae_high: float


@dataclass
class GroupReliance:
    """One input group's effect on one head: permuted and mean-replaced, and its share."""

    group: str
    permuted: Effect
    mean: Effect
    share: float  # of the positive permutation effects on this head's loss


def history_groups(runtime: PolicyRuntime) -> dict[str, list[int]]:
    """History signal -> its columns in the [T, S] window (config order, one or more values)."""
    groups, start = {}, 0
    history = runtime.processor.history
    for signal in history.signals:
        size = int(history.sizes.get(signal, 1))
        groups[signal] = list(range(start, start + size))
        start += size
    return groups


def _errors(heads: list[HeadObjective], predictions: dict[str, torch.Tensor],
            batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per head: per-sample loss and absolute error, float64."""
    out = {}
    for head in heads:
        target = batch[f"target/{head.output}"]
        pred = predictions[head.output]
        out[head.output] = (head.per_sample_loss(pred, target).double(),
                            head.absolute_error(pred, target).double())
    return out


def bootstrap(values: torch.Tensor, resamples: int, generator: torch.Generator) -> tuple[float, float, float]:
    """Mean of ``values`` [N] and its 2.5 / 97.5 % bootstrap percentiles."""
    n = int(values.shape[0])
    index = torch.randint(0, n, (resamples, n), generator=generator)
    means = values[index].mean(dim=1).numpy()
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _permuted(batch: dict[str, torch.Tensor], group: str, columns: list[int], order: torch.Tensor) -> dict[str, torch.Tensor]:
    out = dict(batch)
    if group == FRAMES:
        out["frames"] = batch["frames"][order]
    else:
        history = batch["history"].clone()
        history[..., columns] = batch["history"][order][..., columns]
        out["history"] = history
    return out


def input_reliance(runtime: PolicyRuntime, heads: list[HeadObjective], samples: SplitSamples,
                   blank: np.ndarray, device: torch.device, resamples: int, seed: int = 0,
                   ) -> dict[str, list[GroupReliance]]:
    """Per head, every input group's reliance (frames first, then history signals)."""
    batch = samples.batch
    base = _errors(heads, run_policy(runtime, batch, device).predictions, batch)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(samples), generator=generator)
    history_mean = np.asarray(runtime.processor.history.mean, np.float32)
    groups: dict[str, list[int]] = {FRAMES: [], **history_groups(runtime)}
    effects: dict[str, dict[str, tuple[Effect, Effect]]] = {h.output: {} for h in heads}
    for group, columns in groups.items():
        override = InputOverride(frames=blank) if group == FRAMES else \
            InputOverride(history=history_mean, columns=tuple(columns))
        passes = []
        for perturbed in (_permuted(batch, group, columns, order), override.apply(batch)):
            errors = _errors(heads, run_policy(runtime, perturbed, device).predictions, batch)
            passes.append(errors)
        for head in heads:
            pair = []
            for errors in passes:
                loss = bootstrap(errors[head.output][0] - base[head.output][0], resamples, generator)
                mae = bootstrap(errors[head.output][1] - base[head.output][1], resamples, generator)
                pair.append(Effect(*loss, *mae))
            effects[head.output][group] = (pair[0], pair[1])
    return {output: _with_shares(per_group) for output, per_group in effects.items()}


def _with_shares(per_group: dict[str, tuple[Effect, Effect]]) -> list[GroupReliance]:
    total = sum(max(permuted.loss, 0.0) for permuted, _ in per_group.values())
    return [GroupReliance(group, permuted, mean, max(permuted.loss, 0.0) / total if total > 0 else 0.0)
            for group, (permuted, mean) in per_group.items()]


def reliance_dict(reliance: dict[str, list[GroupReliance]]) -> dict[str, list[dict]]:
    return {output: [asdict(g) for g in groups] for output, groups in reliance.items()}
