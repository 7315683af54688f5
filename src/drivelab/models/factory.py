"""Policy assembly: config -> backbone + history branch + neck + heads, put together by the kind.

The parts every kind shares are built here once; the policy kind (`models.kinds`, from
``model.kind``) assembles them into its module (the LSTM kind adds its core between the neck and
the heads). Importing the kind modules here is what registers the built-in kinds.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from drivelab.config import ConfigError, ExperimentConfig, HeadConfig, ModelConfig
from drivelab.config.policy_section import CommandConfig
from drivelab.errors import DrivelabError
from drivelab.models.backbones import build_backbone
from drivelab.models.budget import check_fits_memory, meta_parameter_count
from drivelab.models.conditioning import BranchedHead, SpeedHead, WindowSplit, branch_history
from drivelab.models.heads import build_head, build_neck
from drivelab.models.history import HistoryBranch
from drivelab.models.kinds import kind_of
from drivelab.models.policy import Policy, PolicyParts
from drivelab.models.recurrent import LstmKind  # noqa: F401  (registers the ``lstm`` kind)
from drivelab.models.temporal import TransformerKind  # noqa: F401  (registers ``transformer``)
from drivelab.processor.fit import DataSpec, PolicyNeeds, check_fit
from drivelab.runs.checkpoints import CheckpointError

__all__ = ["build_policy", "load_trained_policy"]


def _history_step_check(config: ModelConfig, signal_sizes: Mapping[str, int] | None) -> None:
    """The dataset's signal sizes, when known, must agree with the config's (`check_fit`)."""
    if config.history is None or signal_sizes is None:
        return
    needs = PolicyNeeds(history={s: config.history.signal_size(s) for s in config.history.signals})
    check_fit(DataSpec(None, telemetry=dict(signal_sizes)), needs, error=ConfigError)


def build_policy(
    config: ModelConfig,
    frame_shape: tuple[int, int, int],
    history_signal_sizes: Mapping[str, int] | None = None,
    batch_size: int = 1,
) -> Policy:
    """Assemble the policy for frames of ``frame_shape`` [C=3k, H, W].

    ``history_signal_sizes`` (signal name -> values per step, e.g. from the dataset's signal
    specs) is checked against ``model.history`` when given; the config's sizes build the model.
    First the policy is sized on the meta device: one that cannot fit in memory (at
    ``batch_size`` samples) is refused with the figures instead of being allocated.
    """
    offline = config.model_copy(update={"backbone": config.backbone.model_copy(update={"pretrained": False})})
    count = meta_parameter_count(lambda: _assemble(offline, frame_shape, history_signal_sizes))
    check_fits_memory(count, frame_shape, batch_size, config.backbone.name)
    return _assemble(config, frame_shape, history_signal_sizes)


def _assemble(
    config: ModelConfig,
    frame_shape: tuple[int, int, int],
    history_signal_sizes: Mapping[str, int] | None,
) -> Policy:
    channels, height, width = frame_shape
    if channels % 3 != 0:
        raise ConfigError(f"data.frames: frames must be stacked RGB, got {channels} channels")
    kind = kind_of(config)
    backbone = build_backbone(config.backbone, channels // 3, (height, width))
    _history_step_check(config, history_signal_sizes)
    own_history = branch_history(config.history, config.command)
    history = HistoryBranch(own_history, config.heads) if own_history is not None else None
    command = config.command
    joined = int(backbone.num_features) + (history.out_features if history is not None else 0)
    if command is not None and command.mode == "concat" and command.values is not None:
        joined += command.values  # the command joins the neck's input
    neck = build_neck(joined, config.neck)
    features = config.neck[-1] if config.neck else joined
    core = kind.core(config, features)  # the LSTM kind's LSTM, before the heads (the seed's order)
    head_inputs = kind.head_inputs(config, features)
    heads = {
        head.output: _head(head, head_inputs, index, command) for index, head in enumerate(config.heads)
    }
    window = None
    if config.history is not None and (command is not None or config.speed_head is not None):
        window = WindowSplit(config.history, command, config.speed_head)
    speed_head = None
    if config.speed_head is not None:
        speed_head = SpeedHead(int(backbone.num_features), config.speed_head.widths)
    parts = PolicyParts(backbone=backbone, history=history, neck=neck, heads=heads,
                        head_configs={head.output: head for head in config.heads},
                        frame_shape=(channels, height, width), window=window,
                        command_mode=command.mode if command is not None else None, speed_head=speed_head)
    return kind.build(parts, config, core)


def _head(config: HeadConfig, inputs: int, index: int, command: CommandConfig | None) -> nn.Module:
    """One head, or one per command value for a branched policy (CIL)."""
    if command is None or command.mode != "branched":
        return build_head(config, inputs, index)
    assert command.values is not None
    return BranchedHead([build_head(config, inputs, index) for _ in range(command.values)])


def load_trained_policy(
    config: ExperimentConfig,
    history_sizes: Mapping[str, int],
    weights: Mapping[str, torch.Tensor],
    label: str,
    error: type[DrivelabError] = CheckpointError,
) -> Policy:
    """A run's policy with its checkpoint's weights, in eval mode (the runtime's and export's).

    Every consumer of a trained checkpoint (eval, diagnose, export, live, serve) loads it here,
    so here is where a checkpoint that cannot be a working policy is refused, in one ``error``
    line naming it: a missing or unexpected tensor, a tensor of another shape than the config
    builds (``load_state_dict`` would raise a page of size mismatches), a non-finite value
    (NaN weights answer NaN everywhere: parity and reliance figures would compare NaN with NaN,
    and every comparison with NaN is false). Classification heads' ``bin_values`` are rebuilt
    from the config, not read from the checkpoint.
    """
    policy = build_policy(config.model, config.frame_shape, dict(history_sizes) or None)
    expected = policy.state_dict()
    missing = [k for k in expected if k not in weights and not k.endswith("bin_values")]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        raise error(
            f"{label}: checkpoint does not fit its config (missing {_names(missing)}, "
            f"unexpected {_names(unexpected)})"
        )
    for name, tensor in weights.items():
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise error(
                f"{label}: checkpoint tensor {_name(name)} has shape {list(tensor.shape)}, the "
                f"config builds {list(want)}: the weights file does not belong to this run's config"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise error(
                f"{label}: checkpoint tensor {_name(name)} holds {bad} non-finite value(s) (NaN or "
                f"inf) of {tensor.numel()}: the weights are damaged; use an earlier checkpoint (RUN@N)"
            )
    policy.load_state_dict(dict(weights), strict=False)
    return policy.eval()


def _name(name: str, limit: int = 80) -> str:
    """A tensor name from a file, quoted and cut short (a crafted file may name anything)."""
    return repr(name if len(name) <= limit else name[:limit] + "...")


def _names(names: list[str]) -> str:
    return "[" + ", ".join(_name(n) for n in names[:4]) + (", ..." if len(names) > 4 else "") + "]"
