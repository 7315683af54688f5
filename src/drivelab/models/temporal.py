"""The temporal transformer kind: a small causal transformer encoder over the last K steps.

LeRobot, ACT and TransFuser attend over time instead of carrying an LSTM state. Here every
step's token is the neck's output (frame features joined with the history branch, exactly the
LSTM kind's input), projected to ``model.transformer.width``; the action at step t is the
encoder's output at the newest of the K tokens t-K+1..t, each at its learned window position,
with a causal mask. Before K steps exist the window is left-padded with empty slots that no
real token attends to.

What is carried between steps is that window of tokens, not K frames: the backbone sees every
frame once, and each step reruns only the (small) encoder over the buffer. The state is
``[1, K, B, width + 1]``: the K newest tokens, oldest first, each with a last "this slot holds a
token" flag (zeros: an empty buffer, the zero state every episode starts from). Batch on axis 2
is the layout the LSTM's ``[2, layers, B, hidden]`` has, so the trainer's sliding carry (reset
rows zeroed over axis 2), the ONNX card's ``state_shape`` and the exported engine take it as is.

Training (``train.bptt``) runs a sequence [B, T] from a state: the state's K tokens and the T new
ones are cut into T windows and encoded at once (`TemporalPolicy.forward`), which is the same
computation as T single steps with the buffer rolled (tested step by step).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from drivelab.config import ModelConfig
from drivelab.config.policy_section import TransformerConfig
from drivelab.models.kinds import PolicyKind, register_kind
from drivelab.models.policy import Policy, PolicyParts
from drivelab.models.recurrent import STATE_KEY

__all__ = ["TemporalEncoder", "TemporalPolicy", "TransformerKind"]


class _Block(nn.Module):
    """Pre-norm self-attention and MLP, written out in plain ops (one ONNX graph, no fused kernels)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [N, K, D], bias [N, 1, K, K] (0 or -inf) -> [N, K, D]."""
        n, k, d = x.shape
        q, key, v = self.qkv(self.norm1(x)).reshape(n, k, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ key.transpose(-2, -1) / math.sqrt(d // self.heads) + bias
        attended = (self.drop(scores.softmax(-1)) @ v).transpose(1, 2).reshape(n, k, d)
        x = x + self.drop(self.out(attended))
        return x + self.drop(self.mlp(self.norm2(x)))


class TemporalEncoder(nn.Module):
    """Tokens in, the window's encoding out: ``proj`` (features -> width, normalised), positions, blocks."""

    def __init__(self, features: int, options: TransformerConfig) -> None:
        super().__init__()
        self.window = options.window
        self.width = options.width
        self.proj = nn.Linear(features, options.width)
        # Tokens are normalised before they are buffered: the state stays O(1) whatever the
        # backbone's scale, so the exported state matches torch's to float rounding (parity).
        self.token_norm = nn.LayerNorm(options.width)
        self.positions = nn.Parameter(torch.randn(options.window, options.width) * 0.02)
        self.blocks = nn.ModuleList(
            _Block(options.width, options.heads, options.dropout) for _ in range(options.layers))
        self.norm = nn.LayerNorm(options.width)

    def tokens(self, features: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """[B, T, F] neck outputs, [B, T] 1/0 -> [B, T, width + 1] buffer slots (flag last)."""
        flag = present.to(features.dtype).unsqueeze(-1)
        return torch.cat([self.token_norm(self.proj(features)) * flag, flag], dim=-1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """[N, K, width + 1] windows (oldest first) -> [N, width]: the newest slot's encoding.

        Slot j may attend to slot i <= j when i holds a token; every slot attends to itself, so
        no softmax row is empty (an empty slot's encoding is finite and reaches no real one).
        """
        k = windows.shape[1]
        x, present = windows[..., :-1] + self.positions, windows[..., -1] > 0.5
        causal = torch.ones(k, k, dtype=torch.bool, device=windows.device).tril()
        itself = torch.eye(k, dtype=torch.bool, device=windows.device)
        allowed = causal & (present[:, None, :] | itself)  # [N, query, key]
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, float("-inf"))
        for block in self.blocks:
            x = block(x, bias.unsqueeze(1))
        return self.norm(x[:, -1])


class TemporalPolicy(Policy):
    """frames [B, T, 3k, H, W] (+ history [B, T, L, S]) -> {output: [B, T] ...} and the state.

    The call signature is the LSTM policy's (``state``, ``keep_at``, ``lengths``), so the
    trainer's sequence steps, the export graph and the runtime drive both kinds alike;
    :data:`STATE_KEY` holds the buffer after the last step (after ``keep_at`` steps for
    overlapping sliding windows; after each row's ``lengths[b]`` steps for the warmup). A 4-D
    ``frames`` [N, 3k, H, W] is one sequence of N steps from an empty buffer, outputs per frame.
    """

    kind_name: ClassVar[str] = "transformer"

    def __init__(self, temporal: TemporalEncoder, **parts: Any) -> None:
        super().__init__(**parts)
        self.temporal = temporal

    def zero_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """An empty buffer for ``batch`` streams: [1, K, B, width + 1] zeros."""
        if device is None:
            device = next(self.parameters()).device
        return torch.zeros(1, self.temporal.window, batch, self.temporal.width + 1, device=device)

    def forward(
        self,
        frames: torch.Tensor,
        history: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        keep_at: int | None = None,
        lengths: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        frames, history, single = self.as_sequences(frames, history)
        batch, steps = frames.shape[:2]
        if state is None:
            state = self.zero_state(batch, frames.device)
        features, aux, command = self.encode_steps(frames, history, lengths)
        present = torch.ones(batch, steps, device=frames.device)
        if lengths is not None:
            present = (torch.arange(steps, device=frames.device)[None, :] < lengths.to(frames.device)[:, None]).float()
        k = self.temporal.window
        slots = torch.cat([state[0].transpose(0, 1), self.temporal.tokens(features, present)], dim=1)  # [B, K+T, D+1]
        if lengths is not None:  # the warmup: each row's buffer after its own last real step
            index = lengths.to(frames.device, torch.int64)[:, None] + torch.arange(k, device=frames.device)
            new_state = torch.gather(slots, 1, index[..., None].expand(-1, -1, slots.shape[2]))
            encoded = features.new_zeros(batch * steps, self.temporal.width)  # only the state is read
        else:
            kept = steps if keep_at is None or keep_at >= steps else keep_at
            if kept < 1:
                raise ValueError(f"keep_at must be in 1..{steps}, got {keep_at}")
            new_state = slots[:, kept : kept + k]
            index = torch.arange(1, k + 1, device=frames.device)[None, :] + torch.arange(steps, device=frames.device)[:, None]
            encoded = self.temporal(slots[:, index].reshape(batch * steps, k, slots.shape[2]))
        per_step = {**aux, **self.apply_heads(encoded, command)}
        results = {name: value.reshape(batch, steps, *value.shape[1:]) for name, value in per_step.items()}
        if single:
            results = {name: value[0] for name, value in results.items()}
        results[STATE_KEY] = new_state.transpose(0, 1)[None]  # [1, K, B, D+1]
        return results

    def step(self, frames: torch.Tensor, history: torch.Tensor | None,
             state: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One control step for B streams: the new frame's token joins the buffer, the oldest leaves."""
        results = self.forward(frames.unsqueeze(1), history.unsqueeze(1) if history is not None else None,
                               state=state)
        new_state = results.pop(STATE_KEY)
        return {k: v[:, 0] for k, v in results.items()}, new_state


@register_kind
class TransformerKind(PolicyKind):
    """Attention over the last ``model.transformer.window`` steps; the token buffer is the state."""

    name = "transformer"
    step_kind = "sequences"
    stateful = True
    onnx_axes = ("batch", "steps")

    def core(self, config: ModelConfig, features: int) -> nn.Module | None:
        assert config.transformer is not None
        return TemporalEncoder(features, config.transformer)

    def head_inputs(self, config: ModelConfig, features: int) -> int:
        assert config.transformer is not None
        return config.transformer.width

    def build(self, parts: PolicyParts, config: ModelConfig, core: nn.Module | None) -> Policy:
        assert isinstance(core, TemporalEncoder)
        return TemporalPolicy(temporal=core, **parts.as_kwargs())

    def step(self, policy: Policy, frames: torch.Tensor, history: torch.Tensor | None,
             state: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        assert isinstance(policy, TemporalPolicy)
        return policy.step(frames, history, state)

    def zero_state(self, policy: Policy, batch: int, device: torch.device | str) -> torch.Tensor | None:
        assert isinstance(policy, TemporalPolicy)
        return policy.zero_state(batch, device)

    def state_shape(self, policy: Policy) -> tuple[int, ...] | None:
        assert isinstance(policy, TemporalPolicy)
        return (1, policy.temporal.window, policy.temporal.width + 1)

