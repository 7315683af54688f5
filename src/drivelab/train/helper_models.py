"""Charles' helper models (model_0002): one forward/backward per output, gradients summed.

With v2 balancing a sample carries only the label of the output it was balanced for, so each
output gets its own batch. A "helper model" is the shared trunk plus that output's head: every
step runs each helper on its output's batch and backpropagates its loss; the gradients add up in
the shared parameters (and land alone in each head), and one optimizer step updates the main
model, which is what drives at inference. Separate forwards (rather than one forward over the
concatenated batches) keep each output's BatchNorm statistics its own, as the helpers had.
It costs one trunk forward/backward per output, the ~3x of the seed with three outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from drivelab.models.objectives import Objective
from drivelab.train.steps import Backward, LoopParts


def split_by_output(batch: dict[str, torch.Tensor], outputs: Sequence[str], size: int
                    ) -> list[dict[str, torch.Tensor]]:
    """A v2 batch (output after output, ``size`` samples each) -> one batch per output."""
    return [{k: v[i * size : (i + 1) * size] for k, v in batch.items()} for i in range(len(outputs))]


def helper_backward(
    model: Any,
    inputs: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor | None]],
    objective: Objective,
    batches: Sequence[dict[str, torch.Tensor]],
    outputs: Sequence[str],
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Backpropagate every helper's loss on its own batch; returns the step's logged values.

    ``backward`` is the strategy's backward (Fabric's); ``no_sync`` defers the DDP gradient
    all-reduce to the last helper, so the ranks exchange the summed gradient once.
    """
    values: dict[str, torch.Tensor] = {}
    total = None
    last = len(outputs) - 1
    for k, (output, batch) in enumerate(zip(outputs, batches, strict=True)):
        context = no_sync() if (no_sync is not None and k < last) else nullcontext()
        with context:
            terms = objective.output_terms(output, model(*inputs(batch)), batch)
            backward(terms.total)
        values.update(terms.values)
        total = terms.total.detach() if total is None else total + terms.total.detach()
    assert total is not None
    values["loss"] = total
    return values


@dataclass
class HelperStep:
    """The v2 step kind: the batch order's one batch per output, each through its helper model."""

    outputs: list[str]  # the order's helper_outputs: the batch holds their batches in this order

    def backward(self, parts: LoopParts, batch: dict[str, torch.Tensor], number: int) -> Backward:
        parts.optimizer.zero_grad(set_to_none=True)
        logged = helper_backward(
            parts.model, parts.pipeline, parts.objective,
            split_by_output(batch, self.outputs, parts.config.train.batch_size), self.outputs,
            parts.fabric.backward, lambda: parts.fabric.no_backward_sync(parts.model),
        )
        return logged, True

    def state(self, parts: LoopParts, batches_done: int) -> dict[str, Any]:
        return {}  # the buffers' state is the batch order's ("sampler")
