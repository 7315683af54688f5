"""The module that becomes the ONNX graph: the run's input pipeline, its policy, its actions.

In the graph (stateless per call, the same code the torch runtime calls):
- uint8 frames [B, 3k, H, W] -> `processor.pipeline.InputPipeline` (crop, the run's frame
  normalisation, resize) and the raw telemetry window [B, T, S] -> its history standardisation;
- the policy (standardised regression heads already answer in action units);
- classification heads -> argmax bin value (the logits are exported too), delta heads -> last
  executed action + change clipped to the head's range (the last actions come in as
  ``last_action`` [B, D]), then every action clipped to its recorded range.

On the host (state over time, identical in both engines): the frame stack and the history
window (`processor.layout.SampleStream`) and, for a recurrent policy, carrying the (h, c) state
from one call to the next; the graph takes it as ``state`` and returns ``state_out``.

A recurrent graph reads sequences: frames [B, L, 3k, H, W], history [B, L, T, S], last_action
[B, L, D], state [2, layers, B, hidden]; its actions are [B, L]. Driving calls it with L = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from drivelab.export.metadata import (
    FRAMES,
    HISTORY,
    LAST_ACTION,
    LOGITS_SUFFIX,
    STATE,
    STATE_OUT,
    ActionInfo,
)
from drivelab.models.heads import logits_to_action
from drivelab.models.kinds import kind_of
from drivelab.models.policy import Policy
from drivelab.processor.pipeline import InputPipeline
from drivelab.processor.state import ProcessorState

#: Sizes of the export example: never 1 (torch.export specialises a size-1 axis to a constant).
EXAMPLE_BATCH, EXAMPLE_STEPS = 2, 3


def action_infos(policy: Policy, ranges: dict[str, tuple[float | None, float | None]]) -> list[ActionInfo]:
    """One `ActionInfo` per head, in head order; ``ranges`` are the recorded actions' ranges."""
    infos, delta_index = [], 0
    for name in policy.heads:
        config = policy.head_configs[name]
        low, high = ranges.get(name, (None, None))
        bins = tuple(float(v) for v in config.bin_values()) if config.categorical else None
        delta = (float(config.low), float(config.high)) if config.delta else None
        infos.append(ActionInfo(name=name, low=low, high=high, bins=bins, delta=delta,
                                delta_index=delta_index if delta else None))
        delta_index += 1 if delta else 0
    return infos


class DeployedPolicy(nn.Module):
    """uint8 frames (+ raw history, last actions) -> actions in action units (+ logits)."""

    def __init__(self, policy: Policy, processor: ProcessorState, actions: list[ActionInfo]) -> None:
        super().__init__()
        self.policy = policy
        self.pipeline = InputPipeline(processor)
        self.actions = actions
        self.has_history = bool(processor.history.signals)
        self.has_delta = any(a.delta is not None for a in actions)
        self.kind = kind_of(policy)
        #: the kind carries state: the graph takes it as ``state`` and returns ``state_out``
        self.stateful = self.kind.stateful

    # ------------------------------------------------------------------ signature
    @property
    def input_names(self) -> list[str]:
        names = [FRAMES] + ([HISTORY] if self.has_history else []) + ([LAST_ACTION] if self.has_delta else [])
        return names + ([STATE] if self.stateful else [])

    @property
    def output_names(self) -> list[str]:
        names = []
        for action in self.actions:
            names.append(action.name)
            if action.bins is not None:
                names.append(action.name + LOGITS_SUFFIX)
        return names + ([STATE_OUT] if self.stateful else [])

    def forward(
        self,
        frames: torch.Tensor,
        history: torch.Tensor | None = None,
        last_action: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        if len(self.kind.onnx_axes) == 1:  # [B, ...]: one call, one step
            inputs = self.pipeline({"frames": frames, "history": history} if history is not None
                                   else {"frames": frames})
            return tuple(self._actions(self.policy(*inputs), last_action))
        batch, steps = frames.shape[:2]
        flat = {"frames": frames.flatten(0, 1)}
        if history is not None:
            flat["history"] = history.flatten(0, 1)
        pixels, window = self.pipeline(flat)
        results = self.policy(pixels.unflatten(0, (batch, steps)),
                              window.unflatten(0, (batch, steps)) if window is not None else None,
                              state=state)
        new_state = results.pop("state")
        per_step = {k: v.flatten(0, 1) for k, v in results.items()}
        last = last_action.flatten(0, 1) if last_action is not None else None
        outputs = [v.unflatten(0, (batch, steps)) for v in self._actions(per_step, last)]
        return (*outputs, new_state)

    def _actions(self, results: dict[str, torch.Tensor], last_action: torch.Tensor | None) -> list[torch.Tensor]:
        """Head results [N, ...] -> [action [N] (+ logits [N, bins]) per head], in output order."""
        outputs = []
        for info in self.actions:
            raw = results[info.name]
            head = self.policy.heads[info.name]
            value = logits_to_action(raw, head.bin_values) if info.bins is not None else raw
            if info.delta is not None:
                assert last_action is not None and info.delta_index is not None
                value = torch.clamp(last_action[:, info.delta_index] + value, *info.delta)
            if info.low is not None or info.high is not None:
                value = torch.clamp(value, info.low, info.high)
            outputs.append(value)
            if info.bins is not None:
                outputs.append(raw)
        return outputs


@dataclass(frozen=True)
class ExampleInputs:
    """Example tensors for the export and the axes that stay dynamic in the graph."""

    args: tuple[torch.Tensor | None, ...]
    dynamic_shapes: tuple[dict[int, object] | None, ...]


def example_inputs(module: DeployedPolicy, processor: ProcessorState) -> ExampleInputs:
    """Random inputs of the example sizes; batch (and steps) dynamic, everything else fixed."""
    batch = torch.export.Dim("batch")
    steps = torch.export.Dim("steps")
    lead = (EXAMPLE_BATCH, EXAMPLE_STEPS)[:len(module.kind.onnx_axes)]
    axes: dict[int, object] = dict(enumerate((batch, steps)[:len(module.kind.onnx_axes)]))
    h, w, c = processor.frames.source_shape
    frames = torch.randint(0, 256, (*lead, c * processor.frames.stack, h, w), dtype=torch.uint8)
    history = last = state = None
    if module.has_history:
        width = sum(processor.history.sizes[s] for s in processor.history.signals)
        history = torch.randn(*lead, processor.history.length, width)
    if module.has_delta:
        last = torch.zeros(*lead, sum(a.delta is not None for a in module.actions))
    state = module.kind.zero_state(module.policy, EXAMPLE_BATCH, "cpu")
    args = (frames, history, last, state)
    shapes = tuple(None if a is None else (axes if i < 3 else {2: batch}) for i, a in enumerate(args))
    return ExampleInputs(args, shapes)
