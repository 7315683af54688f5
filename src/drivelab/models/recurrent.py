"""The recurrent policy: a backbone per frame, an LSTM stack over time, the heads at every step.

kkelchte's tiny_LSTM_net runs its tiny CNN on each frame of a sequence, feeds the features to a
2-layer LSTM (64 units) and a linear layer reads the LSTM's output at every step. Here the CNN is
any ``model.backbone``; the history branch (when configured) reads each step's telemetry window
and joins the frame features before the neck, exactly as in the frame policy, so the LSTM is the
one place that carries memory across steps. That is why the history branch keeps no state of its
own over a sequence: its window is re-read at every step, and ``history.length: 1`` hands the
LSTM one telemetry row per step to integrate itself.

The module has the frame policy's submodule names (``backbone``, ``history``, ``neck``,
``heads.<output>``) plus ``lstm``, so transfer learning, summaries and the conv-cam find their
parts. ``forward`` returns the predictions dict with the LSTM state under :data:`STATE_KEY`
(``stack([h, c])``, [2, layers, B, hidden]); a dict keeps every caller that reads heads by name
(objective, offline metrics, summaries) working unchanged, and DDP sees one forward per step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from drivelab.config import ModelConfig
from drivelab.models.kinds import PolicyKind, register_kind
from drivelab.models.policy import Policy, PolicyParts

__all__ = ["STATE_KEY", "LstmKind", "RecurrentPolicy", "split_state", "zero_state"]

#: Where ``forward`` puts the LSTM state (h and c stacked: [2, layers, B, hidden]).
STATE_KEY = "state"


def zero_state(layers: int, batch: int, hidden: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The all-zero (h, c) a sequence starts from, stacked like :data:`STATE_KEY`."""
    return torch.zeros(2, layers, batch, hidden, device=device)


def split_state(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked [2, layers, B, hidden] -> the (h, c) pair nn.LSTM takes (contiguous)."""
    return state[0].contiguous(), state[1].contiguous()


class RecurrentPolicy(Policy):
    """frames [B, T, 3k, H, W] (+ history [B, T, L, S]) -> {output: [B, T] | [B, T, n_bins]}.

    ``state`` ([2, layers, B, hidden], zeros when None) is where the sequence starts; the returned
    :data:`STATE_KEY` is the state after the last step, or after ``keep_at`` steps (sliding
    windows that overlap carry the state at the point where the next window begins). With
    ``lengths`` ([B] valid steps per row, padding after them) the returned state is each row's
    state after its own last valid step, and padded frames never reach the backbone: that is
    how the WW-TBPTT warmup runs rows with different amounts of earlier frames in one batch.

    A 4-D ``frames`` [N, 3k, H, W] is read as one sequence of N steps from a zero state and the
    outputs come back per frame ([N], [N, n_bins]), the frame policy's shapes; that lets a
    summary or a per-episode offline score call it like any policy.
    """

    recurrent = True
    kind_name: ClassVar[str] = "lstm"

    def __init__(self, lstm: nn.LSTM, **parts: Any) -> None:
        super().__init__(**parts)
        self.lstm = lstm

    @property
    def layers(self) -> int:
        return int(self.lstm.num_layers)

    @property
    def hidden(self) -> int:
        return int(self.lstm.hidden_size)

    def zero_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Zeros for ``batch`` sequences, on the policy's device unless told otherwise."""
        if device is None:
            device = next(self.parameters()).device
        return zero_state(self.layers, batch, self.hidden, device)

    # ------------------------------------------------------------------ forward
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
        if lengths is not None:
            results = self._packed(features, state, lengths)
        else:
            results = self._unrolled(features, state, keep_at)
        sequence = results.pop("sequence")
        flat = sequence.reshape(batch * steps, -1)
        for name, value in self.apply_heads(flat, command).items():
            results[name] = value.reshape(batch, steps, *value.shape[1:])
        for name, value in aux.items():
            results[name] = value.reshape(batch, steps, *value.shape[1:])
        if single:
            return {k: (v if k == STATE_KEY else v[0]) for k, v in results.items()}
        return results

    def _unrolled(
        self, features: torch.Tensor, state: torch.Tensor, keep_at: int | None
    ) -> dict[str, torch.Tensor]:
        steps = features.shape[1]
        if keep_at is None or keep_at >= steps:
            sequence, (h, c) = self.lstm(features, split_state(state))
            return {"sequence": sequence, STATE_KEY: torch.stack([h, c])}
        if keep_at < 1:
            raise ValueError(f"keep_at must be in 1..{steps}, got {keep_at}")
        first, (h, c) = self.lstm(features[:, :keep_at], split_state(state))
        kept = torch.stack([h, c])
        rest, _ = self.lstm(features[:, keep_at:], (h, c))
        return {"sequence": torch.cat([first, rest], dim=1), STATE_KEY: kept}

    def _packed(
        self, features: torch.Tensor, state: torch.Tensor, lengths: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Each row's state after its own ``lengths[b]`` steps; rows of length 0 keep ``state``."""
        lengths = lengths.to("cpu", torch.int64)
        rows = torch.nonzero(lengths > 0).flatten()
        new_state = state.clone()
        if len(rows) > 0:
            index = rows.to(features.device)
            packed = pack_padded_sequence(
                features[index], lengths[rows], batch_first=True, enforce_sorted=False
            )
            h0, c0 = split_state(state[:, :, index])
            _, (h, c) = self.lstm(packed, (h0, c0))
            new_state[:, :, index] = torch.stack([h, c])
        sequence = features.new_zeros(*features.shape[:2], self.hidden)
        return {"sequence": sequence, STATE_KEY: new_state}

    # ------------------------------------------------------------------ driving
    def step(
        self,
        frames: torch.Tensor,
        history: torch.Tensor | None,
        state: torch.Tensor | None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One control step for B streams: [B, 3k, H, W] -> ({output: [B] ...}, new state).

        The runtime calls this every frame with the state it got last time (None at an
        episode's start), which is window 1 with carried state: the validation the seed used.
        """
        results = self.forward(
            frames.unsqueeze(1),
            history.unsqueeze(1) if history is not None else None,
            state=state,
        )
        new_state = results.pop(STATE_KEY)
        return {k: v[:, 0] for k, v in results.items()}, new_state


@register_kind
class LstmKind(PolicyKind):
    """An LSTM stack between the neck and the heads, its (h, c) carried from step to step.

    Options: ``model.recurrent`` (layers, hidden); trained on sequences (``train.bptt``); its
    graph reads ``[B, L, ...]`` and takes and returns the state ([2, layers, B, hidden]).
    """

    name = "lstm"
    step_kind = "sequences"
    stateful = True
    onnx_axes = ("batch", "steps")

    def head_inputs(self, config: ModelConfig, features: int) -> int:
        assert config.recurrent is not None
        return config.recurrent.hidden

    def core(self, config: ModelConfig, features: int) -> nn.Module | None:
        assert config.recurrent is not None
        return nn.LSTM(features, config.recurrent.hidden, num_layers=config.recurrent.layers, batch_first=True)

    def build(self, parts: PolicyParts, config: ModelConfig, core: nn.Module | None) -> Policy:
        assert isinstance(core, nn.LSTM)
        return RecurrentPolicy(lstm=core, **parts.as_kwargs())

    def step(self, policy: Policy, frames: torch.Tensor, history: torch.Tensor | None,
             state: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        assert isinstance(policy, RecurrentPolicy)
        return policy.step(frames, history, state=state)

    def zero_state(self, policy: Policy, batch: int, device: torch.device | str) -> torch.Tensor | None:
        assert isinstance(policy, RecurrentPolicy)
        return policy.zero_state(batch, device)

    def state_shape(self, policy: Policy) -> tuple[int, ...] | None:
        assert isinstance(policy, RecurrentPolicy)
        return (2, policy.layers, policy.hidden)

