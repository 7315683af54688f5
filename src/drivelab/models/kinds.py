"""The policy-kind registry: what a kind of policy needs, registered by name (as timm's models).

A *kind* is how a policy treats time. Everything outside ``models/`` that used to ask "is this
policy recurrent?" asks its kind instead:

- ``core`` / ``head_inputs`` / ``build``: the kind's own module between the neck and the heads
  (from its config section, ``POLICY_KINDS[name].section`` in `drivelab.config`), the heads'
  input width, and the policy module from the shared parts (backbone, history, neck, heads);
- ``stateful`` / ``zero_state`` / ``state_shape``: whether and what it carries between steps
  (the runtime starts every episode from None and passes back what ``step`` returned);
- ``step``: the per-step call at run time for a batch of streams;
- ``onnx_axes``: the leading axes of every graph input (``batch``, or ``batch, steps`` for a
  graph that reads sequences and takes and returns its state as ``state``/``state_out``);
- ``step_kind``: the trainer's step kind, ``frames`` (batches of samples) or ``sequences``
  (BPTT windows, ``train.bptt``);
- what a kind needs of the training episodes (the transformer's window) is declared with its
  config section (`drivelab.config.KindSpec.window`), so the batch order checks it from the config.

A kind lives in its own module, subclasses `PolicyKind` and is registered with
``@register_kind``; `models.factory` imports the module (that import is the one registration
line), and `drivelab.config`'s ``POLICY_KINDS`` names it with its options section.
``stateless`` is in `models.policy`, ``lstm`` in `models.recurrent`, ``transformer`` in
`models.temporal`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from drivelab.config import ConfigError, ModelConfig
from drivelab.config.policy_section import POLICY_KINDS

#: A built policy (`models.policy.Policy` or a subclass) and the parts it is made of
#: (`models.policy.PolicyParts`); named loosely here: the kind modules import this one.
Policy = nn.Module
PolicyParts = Any

__all__ = ["PolicyKind", "get_kind", "kind_names", "kind_of", "register_kind"]

Results = dict[str, torch.Tensor]


class PolicyKind(ABC):
    """The protocol every kind implements (defaults: a stateless frame policy; `build` is each
    kind's own, so a kind that forgets it cannot be registered: instantiating it fails)."""

    name: ClassVar[str] = ""
    step_kind: ClassVar[str] = "frames"
    stateful: ClassVar[bool] = False
    onnx_axes: ClassVar[tuple[str, ...]] = ("batch",)

    def core(self, config: ModelConfig, features: int) -> nn.Module | None:
        """The kind's own module between the neck (``features`` wide) and the heads, or None.

        Built before the heads, so a seed initialises every part in the order it always did.
        """
        return None

    @abstractmethod
    def build(self, parts: PolicyParts, config: ModelConfig, core: nn.Module | None) -> Policy:
        """The policy of this kind from the shared parts (backbone, history, neck, heads) and its core."""

    def head_inputs(self, config: ModelConfig, features: int) -> int:
        """The heads' input width given the neck's output width (a core in between changes it)."""
        return features

    def step(self, policy: Policy, frames: torch.Tensor, history: torch.Tensor | None,
             state: torch.Tensor | None) -> tuple[Results, torch.Tensor | None]:
        """One control step for B streams: ([B, 3k, H, W], [B, T, S]) -> ({output: [B]...}, state)."""
        return policy(frames, history), None

    def zero_state(self, policy: Policy, batch: int, device: torch.device | str) -> torch.Tensor | None:
        """The state an episode starts from, for ``batch`` streams (None: the kind keeps none)."""
        return None

    def state_shape(self, policy: Policy) -> tuple[int, ...] | None:
        """The state's shape without its batch axis (the exported card's ``state_shape``)."""
        return None


_KINDS: dict[str, PolicyKind] = {}


def register_kind(cls: type[PolicyKind]) -> type[PolicyKind]:
    """Class decorator: register a kind under ``cls.name`` (a name `POLICY_KINDS` declares)."""
    if cls.name not in POLICY_KINDS:
        raise ValueError(f"policy kind {cls.name!r} has no entry in drivelab.config POLICY_KINDS")
    if cls.name in _KINDS:
        raise ValueError(f"policy kind {cls.name!r} is registered twice")
    if (cls.step_kind == "sequences") != POLICY_KINDS[cls.name].sequences:
        raise ValueError(f"policy kind {cls.name!r}: step kind disagrees with POLICY_KINDS")
    _KINDS[cls.name] = cls()
    return cls


def kind_names() -> list[str]:
    return list(_KINDS)


def get_kind(name: str) -> PolicyKind:
    """The registered kind ``name``; an unknown name is one line listing the valid ones."""
    if name not in _KINDS:
        raise ConfigError(f"model.kind: unknown policy kind {name!r}; valid kinds: {', '.join(_KINDS)}")
    return _KINDS[name]


def kind_of(subject: ModelConfig | nn.Module) -> PolicyKind:
    """The kind of a model config or of a built policy (its ``kind_name``)."""
    return get_kind(str(subject.kind_name))
