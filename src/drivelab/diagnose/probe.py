"""The previous-action probe (Wen et al. 2020) and the copy-the-last-action baseline.

A copycat carries the previous action in its features and repeats it. A ridge probe fitted on
the train split and scored on val measures how linearly decodable the last executed action is
from (a) the joint features before the heads and (b) the frame features alone: a large gap
says the history branch hands the heads the last action. The copy baseline asks the output
side: how well does the last action alone explain the expert's action, the policy's action,
and how close is the policy to just repeating it (R² of the policy's output by the last action).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drivelab.diagnose.forward import Forward
from drivelab.diagnose.samples import SplitSamples
from drivelab.models.objectives import HeadObjective


def r2(target: torch.Tensor, prediction: torch.Tensor) -> float:
    """1 - SSE/SST, float64; NaN when the target does not vary."""
    target, prediction = target.double(), prediction.double()
    total = (target - target.mean()).square().sum()
    if total <= 0:
        return float("nan")
    return float(1.0 - (target - prediction).square().sum() / total)


def explained(target: torch.Tensor, predictor: torch.Tensor) -> float:
    """R² of the best line through ``predictor`` -> ``target`` (squared correlation); NaN if either is constant.

    Used for "how much of the policy is the last action": an undertrained policy's actions
    vary little, so a direct-copy R² over their own variance says nothing, while the best
    linear fit asks whether they move with the last action at all.
    """
    a, b = target.double() - target.double().mean(), predictor.double() - predictor.double().mean()
    denominator = a.square().sum() * b.square().sum()
    if denominator <= 0:
        return float("nan")
    return float((a * b).sum().square() / denominator)


def ridge_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                ridge: float) -> list[float]:
    """R² on val per target column of a ridge regression fitted on standardised train features."""
    if train_x.shape[1] == 0:  # no features (a frameless backbone): nothing to decode from
        return [float("nan")] * val_y.shape[1]
    x, y = train_x.double(), train_y.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    y_mean = y.mean(0)
    gram = x.T @ x + ridge * x.shape[0] * torch.eye(x.shape[1], dtype=x.dtype)
    weights = torch.linalg.solve(gram, x.T @ (y - y_mean))
    predicted = ((val_x.double() - mean) / std) @ weights + y_mean
    return [r2(val_y[:, j], predicted[:, j]) for j in range(val_y.shape[1])]


@dataclass
class ProbeResult:
    """Previous-action decodability (val R², per output) from the joint and the frame features."""

    outputs: list[str]
    joint_r2: dict[str, float]
    frames_r2: dict[str, float]


def previous_action_probe(train: Forward, train_samples: SplitSamples, val: Forward, val_samples: SplitSamples,
                          ridge: float) -> ProbeResult:
    outputs = [o for o in val_samples.previous if o in train_samples.previous]
    if not outputs or train.joint is None or val.joint is None or train.frames is None or val.frames is None:
        return ProbeResult(outputs, {}, {})
    ty = torch.stack([train_samples.previous[o] for o in outputs], 1)
    vy = torch.stack([val_samples.previous[o] for o in outputs], 1)
    joint = ridge_probe(train.joint, ty, val.joint, vy, ridge)
    frames = ridge_probe(train.frames, ty, val.frames, vy, ridge)
    return ProbeResult(outputs, dict(zip(outputs, joint, strict=True)), dict(zip(outputs, frames, strict=True)))


@dataclass
class CopyBaseline:
    """R² of the expert's action by the last action (copying) and by the policy, and the share
    of the policy's action a line through the last action explains (how much of it is a copy)."""

    copy_r2: float
    policy_r2: float
    policy_copy_r2: float


def copy_baseline(heads: list[HeadObjective], val: Forward, samples: SplitSamples,
                  delta: set[str]) -> dict[str, CopyBaseline]:
    """Per head with a recorded previous action; delta heads are compared as actions (last + change)."""
    out = {}
    for head in heads:
        previous = samples.previous.get(head.output)
        if previous is None:
            continue
        target = samples.batch[f"target/{head.output}"].reshape(len(samples), -1)[:, 0].float()
        action = head.action(val.predictions[head.output]).float()
        if head.output in delta:
            target, action = target + previous, action + previous
        out[head.output] = CopyBaseline(r2(target, previous), r2(target, action), explained(action, previous))
    return out
