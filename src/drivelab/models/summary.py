"""Model summaries in the Keras convention, so counts compare with the seeds' model pages.

Charles's pages list "Total / Trainable / Non-trainable params" as Keras prints them: BatchNorm
moving mean and variance count as non-trainable *parameters* (PyTorch calls them buffers), and so
do frozen weights. ``num_batches_tracked`` has no Keras counterpart and is not counted. Counting
the same way is what makes "56,470,434 vs ours" a meaningful comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from drivelab.config import ExperimentConfig
from drivelab.models.factory import build_policy
from drivelab.models.freezing import plan_freeze
from drivelab.models.policy import Policy

__all__ = [
    "BN_STATISTICS",
    "LayerRow",
    "ParamCounts",
    "Summary",
    "count_parameters",
    "render_summary",
    "summarize",
    "summarize_config",
]

#: Buffer names that Keras counts as (non-trainable) weights.
BN_STATISTICS = ("running_mean", "running_var")


@dataclass(frozen=True)
class ParamCounts:
    """Keras-style counts: ``total = trainable + non_trainable``.

    ``non_trainable = frozen`` (parameters with ``requires_grad=False``) ``+ bn_statistics``
    (BatchNorm running mean and variance values).
    """

    trainable: int = 0
    frozen: int = 0
    bn_statistics: int = 0

    @property
    def non_trainable(self) -> int:
        return self.frozen + self.bn_statistics

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    def __add__(self, other: ParamCounts) -> ParamCounts:
        return ParamCounts(
            self.trainable + other.trainable,
            self.frozen + other.frozen,
            self.bn_statistics + other.bn_statistics,
        )


def count_parameters(module: nn.Module, recurse: bool = True) -> ParamCounts:
    """Count a module's weights the Keras way (see :class:`ParamCounts`)."""
    trainable = frozen = statistics = 0
    for parameter in module.parameters(recurse=recurse):
        if parameter.requires_grad:
            trainable += parameter.numel()
        else:
            frozen += parameter.numel()
    for name, buffer in module.named_buffers(recurse=recurse):
        if name.rsplit(".", 1)[-1] in BN_STATISTICS:
            statistics += buffer.numel()
    return ParamCounts(trainable, frozen, statistics)


@dataclass(frozen=True)
class LayerRow:
    """One line of the layer table; ``params`` is the Keras "Param #" (weights + BN stats)."""

    path: str
    type_name: str
    output_shape: str
    params: int
    trainable: int


@dataclass(frozen=True)
class Summary:
    """What ``drivelab summary`` reports about a policy.

    Shapes leave out the batch dimension. ``parts`` counts each named part (``backbone``,
    ``history``, ``neck``, ``heads.<output>``) so a backbone swap or a head change shows where
    the difference lies.
    """

    rows: tuple[LayerRow, ...]
    counts: ParamCounts
    parts: dict[str, ParamCounts]
    input_shapes: dict[str, tuple[int, ...]]
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def total_params(self) -> int:
        return self.counts.total

    @property
    def trainable_params(self) -> int:
        return self.counts.trainable

    @property
    def non_trainable_params(self) -> int:
        return self.counts.non_trainable


def _layer_modules(model: nn.Module, max_depth: int) -> list[tuple[str, nn.Module, bool]]:
    """Modules that partition the weights: (path, module, counts_whole_subtree).

    A module is listed whole at ``max_depth`` or when it has no children; a shallower container
    is listed only for weights it holds itself (e.g. a class token), so rows add up to the total.
    """
    listed: list[tuple[str, nn.Module, bool]] = []

    def visit(path: str, module: nn.Module, depth: int) -> None:
        children = list(module.named_children())
        if not children or depth >= max_depth:
            listed.append((path, module, True))
            return
        if count_parameters(module, recurse=False).total:
            listed.append((path, module, False))
        for name, child in children:
            visit(f"{path}.{name}", child, depth + 1)

    for name, child in model.named_children():
        visit(name, child, 1)
    return listed


def _shape_text(value: object) -> str:
    """Shape of a module output with the batch dimension written as B."""
    if isinstance(value, torch.Tensor):
        return "[" + ", ".join(["B", *map(str, value.shape[1:])]) + "]" if value.ndim else "[]"
    if isinstance(value, tuple | list) and value:
        return _shape_text(value[0])
    if isinstance(value, Mapping):
        return "{" + ", ".join(map(str, value)) + "}"
    return ""


def _dummy_inputs(policy: Policy) -> tuple[torch.Tensor, torch.Tensor | None]:
    device = next(policy.parameters()).device
    frames = torch.zeros(1, *policy.frame_shape, device=device)
    shape = policy.history_shape
    history = torch.zeros(1, *shape, device=device) if shape is not None else None
    return frames, history


def _record_shapes(
    policy: Policy, modules: list[tuple[str, nn.Module, bool]]
) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """Run one blank sample through the policy and note each listed module's output shape."""
    shapes: dict[str, str] = {}
    handles = []
    for path, module, _ in modules:

        def hook(_module: nn.Module, _inputs: object, output: object, path: str = path) -> None:
            shapes[path] = _shape_text(output)

        handles.append(module.register_forward_hook(hook))
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            results = policy(*_dummy_inputs(policy))
    finally:
        for handle in handles:
            handle.remove()
        policy.train(was_training)
    # a recurrent policy also returns its LSTM state ("state"), which is not an output
    # (nor the speed head's prediction and target: training-only)
    outputs = {name: tuple(value.shape[1:]) for name, value in results.items()
               if name != "state" and not name.startswith("speed_head/")}
    return shapes, outputs


def summarize(policy: Policy, with_shapes: bool = True, max_depth: int = 3) -> Summary:
    """Summarize a built policy; ``with_shapes`` runs one blank sample to get output shapes.

    Counting alone needs no forward pass, which matters for 55M-parameter backbones on a CPU.
    """
    modules = _layer_modules(policy, max_depth)
    shapes: dict[str, str] = {}
    outputs: dict[str, tuple[int, ...]] = {}
    if with_shapes:
        shapes, outputs = _record_shapes(policy, modules)
    rows = []
    for path, module, whole in modules:
        counts = count_parameters(module, recurse=whole)
        rows.append(
            LayerRow(
                path=path,
                type_name=type(module).__name__,
                output_shape=shapes.get(path, "") if whole else "",
                params=counts.total,
                trainable=counts.trainable,
            )
        )
    parts: dict[str, ParamCounts] = {"backbone": count_parameters(policy.backbone)}
    if policy.history is not None:
        parts["history"] = count_parameters(policy.history)
    parts["neck"] = count_parameters(policy.neck)
    shared = {"backbone", "history", "neck", "heads", "window", "speed_head"}
    for name, module in policy.named_children():  # the kind's own core (the lstm kind's ``lstm``)
        if name not in shared:
            parts[name] = count_parameters(module)
    for name, head in policy.heads.items():
        parts[f"heads.{name}"] = count_parameters(head)
        for index, branch in enumerate(getattr(head, "branches", ())):  # a branched (CIL) head
            parts[f"heads.{name}.branches.{index}"] = count_parameters(branch)
    if getattr(policy, "speed_head", None) is not None:
        parts["speed_head"] = count_parameters(policy.speed_head)
    inputs: dict[str, tuple[int, ...]] = {"frames": policy.frame_shape}
    if policy.history_shape is not None:
        inputs["history"] = policy.history_shape
    return Summary(
        rows=tuple(rows),
        counts=count_parameters(policy),
        parts=parts,
        input_shapes=inputs,
        output_shapes=outputs,
    )


def summarize_config(
    config: ExperimentConfig,
    history_signal_sizes: Mapping[str, int] | None = None,
    with_shapes: bool = True,
    max_depth: int = 3,
) -> Summary:
    """Build the config's policy (random init) and summarize it: the ``drivelab summary`` verb.

    Weights do not change the counts, so ``pretrained`` and ``init_from`` are ignored here: a
    summary never needs the network or the weights file. ``model.freeze`` does change them: the
    counts are those training starts with (before any ``unfreeze_at``).
    """
    model = config.model.model_copy(
        update={"backbone": config.model.backbone.model_copy(update={"pretrained": False})}
    )
    policy = build_policy(model, config.frame_shape, history_signal_sizes)
    # The summary shows batch 0, where an unfreeze has not happened whatever the epoch length.
    freeze = plan_freeze(model, policy, batches_per_epoch=1)
    if freeze is not None:
        freeze.apply(policy, 0)
    return summarize(policy, with_shapes=with_shapes, max_depth=max_depth)


def _batch_shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(["B", *map(str, shape)]) + "]"


def render_summary(summary: Summary, title: str = "") -> str:
    """The summary as a plain-text table followed by Keras-style totals."""
    header = ("Layer", "Type", "Output shape", "Param #")
    table = [header] + [
        (row.path, row.type_name, row.output_shape, f"{row.params:,}") for row in summary.rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(4)]

    def line(cells: tuple[str, str, str, str]) -> str:
        left = "  ".join(cell.ljust(width) for cell, width in zip(cells[:3], widths, strict=False))
        return f"{left}  {cells[3].rjust(widths[3])}"

    rule = "=" * (sum(widths) + 6)
    lines = [title] if title else []
    lines += [rule, line(header), rule, *(line(cells) for cells in table[1:]), rule]
    lines.append(
        "Inputs: "
        + ", ".join(f"{name} {_batch_shape(shape)}" for name, shape in summary.input_shapes.items())
    )
    if summary.output_shapes:
        lines.append(
            "Outputs: "
            + ", ".join(
                f"{name} {_batch_shape(shape)}" for name, shape in summary.output_shapes.items()
            )
        )
    lines.append(
        "Parts: " + ", ".join(f"{name} {counts.total:,}" for name, counts in summary.parts.items())
    )
    counts = summary.counts
    lines += [
        f"Total params: {counts.total:,}",
        f"Trainable params: {counts.trainable:,}",
        f"Non-trainable params: {counts.non_trainable:,} (frozen {counts.frozen:,} + "
        f"BatchNorm statistics {counts.bn_statistics:,})",
    ]
    return "\n".join(lines)
