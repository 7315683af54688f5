"""The policy over a whole in-memory split, in chunks: predictions and the features before the heads.

Both the reliance test (many perturbed passes) and the probe (features) run the policy the way
the offline evaluator does (its `InputPipeline`, eval mode, no gradients); chunks keep memory
flat on a large split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drivelab.evaluate.runtime import PolicyRuntime

CHUNK = 256


@dataclass
class Forward:
    """One pass: head outputs, and (when asked) the joint features and the frame features."""

    predictions: dict[str, torch.Tensor]
    joint: torch.Tensor | None = None  # the neck's input: frame features + history vector
    frames: torch.Tensor | None = None  # the backbone's features alone


def run_policy(runtime: PolicyRuntime, batch: dict[str, torch.Tensor], device: torch.device,
               features: bool = False) -> Forward:
    """The policy on every sample of ``batch`` (raw, as the loader gives it)."""
    policy = runtime.policy.to(device).eval()
    captured: list[torch.Tensor] = []
    hook = policy.neck.register_forward_pre_hook(lambda _m, args: captured.append(args[0].float().cpu())) \
        if features else None
    predictions: dict[str, list[torch.Tensor]] = {}
    frame_features: list[torch.Tensor] = []
    n = int(batch["frames"].shape[0])
    try:
        with torch.inference_mode():
            for start in range(0, n, CHUNK):
                part = {k: v[start:start + CHUNK].to(device) for k, v in batch.items()}
                frames, history = runtime.pipeline(part)
                for name, value in policy(frames, history).items():
                    predictions.setdefault(name, []).append(value.float().cpu())
                if features:
                    frame_features.append(policy.backbone(frames).flatten(1).float().cpu())
    finally:
        if hook is not None:
            hook.remove()
    out = Forward({k: torch.cat(v) for k, v in predictions.items()})
    if features:
        out.joint, out.frames = torch.cat(captured), torch.cat(frame_features)
    return out
