"""The BPTT step kind: a recurrent policy trained with F-BPTT, WW-TBPTT or S-TBPTT.

Everything around a step is the loop's (`drivelab.train.loop`: logging, boundaries, checkpoints,
NaN checks); what differs for sequences is here:

- the step reads a sequence batch (`drivelab.order.sequences`), runs the policy over time from
  the row's initial state (zeros, a no-gradient warmup over earlier frames, or — sliding — the
  state the row ended the previous batch with, detached) and averages the per-frame losses over
  the real (unmasked) frames;
- validation runs every val episode whole, step after step with the state carried: kkelchte's
  "window 1, sliding" evaluation, and what the runtime does when it drives;
- the trainer state adds what the next batch depends on beyond the loop's: the order's position
  (per-row cursors for sliding), the carried (h, c) of every row, and the gradients summed so
  far when ``accumulate`` is on. So N + resume + N batches equal 2N, in every mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from drivelab.config import BPTTConfig
from drivelab.models.recurrent import STATE_KEY
from drivelab.processor.pipeline import InputPipeline
from drivelab.train.sequence_batches import SequenceBatches, val_rows
from drivelab.train.steps import Backward, LoopParts, gather_ranks

#: Validation runs val episodes through the LSTM this many steps at a time (state carried).
VAL_CHUNK = 256


def time_inputs(
    pipeline: InputPipeline, batch: dict[str, torch.Tensor], prefix: str = ""
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 [B, T, 3k, H, W] (+ history) -> the pipeline's float inputs, time kept."""
    frames = batch[f"{prefix}frames"]
    b, t = frames.shape[:2]
    flat = pipeline.frames(frames.reshape(b * t, *frames.shape[2:]))
    history = batch.get(f"{prefix}history")
    if history is not None:
        history = pipeline.history(history)
    return flat.reshape(b, t, *flat.shape[1:]), history


def per_frame_terms(
    parts: LoopParts, predictions: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The objective's per-sample terms of every (row, step), flattened to [B * T]."""
    n = batch["mask"].numel()
    flat_pred = {k: v.reshape(n, *v.shape[2:]) for k, v in predictions.items() if k != STATE_KEY}
    flat_batch = {k: v.reshape(n, -1) for k, v in batch.items() if k.startswith("target/")}
    return parts.objective.per_sample(flat_pred, flat_batch)


@dataclass
class SequenceStep:
    """Sequence steps with the state carried (sliding) and gradients summed (``accumulate``)."""

    bptt: BPTTConfig
    total_batches: int  # ``accumulate`` always updates on the period's last batch
    carry: torch.Tensor | None = None  # sliding: [2, layers, B, hidden], detached
    accumulating: bool = False  # sliding + accumulate: gradients summed since the last update

    def _initial_state(self, parts: LoopParts, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if self.bptt.mode == "sliding" and self.carry is not None:
            keep = (~batch["reset"]).to(self.carry.dtype).view(1, 1, -1, 1)
            return self.carry.to(batch["mask"].device) * keep
        if self.bptt.initial_state == "warmup" and "warmup/frames" in batch:
            frames, history = time_inputs(parts.pipeline, batch, "warmup/")
            with torch.no_grad():
                warm = parts.model(frames, history, lengths=batch["warmup/lengths"])
            return warm[STATE_KEY].detach()
        return None

    def backward(self, parts: LoopParts, batch: dict[str, torch.Tensor], number: int) -> Backward:
        """Forward over time, the mean loss over the real frames, backward; maybe no update."""
        bptt = self.bptt
        state = self._initial_state(parts, batch)
        frames, history = time_inputs(parts.pipeline, batch)
        keep_at = bptt.stride if bptt.mode == "sliding" and bptt.stride < bptt.window else None
        predictions = parts.model(frames, history, state=state, keep_at=keep_at)
        if bptt.mode == "sliding":
            self.carry = predictions[STATE_KEY].detach()
        mask = batch["mask"].reshape(-1)
        count = mask.sum().clamp_min(1.0)
        means = {k: (v.float() * mask).sum() / count for k, v in per_frame_terms(parts, predictions, batch).items()}
        if not self.accumulating:
            parts.optimizer.zero_grad(set_to_none=True)
        parts.fabric.backward(means["loss"])
        update = not bptt.accumulate or bool(batch["last"].any()) or number + 1 >= self.total_batches
        self.accumulating = not update
        return {k: v.detach() for k, v in means.items()}, update

    def state(self, parts: LoopParts, batches_done: int) -> dict[str, Any]:
        """The order's position, every rank's carried state and summed gradients."""
        carry = self.carry.detach().cpu().clone() if self.carry is not None else None
        grads = None
        if self.accumulating:
            grads = [p.grad.detach().cpu().clone() if p.grad is not None else None for p in parts.policy.parameters()]
        return {
            "sequence": {"mode": self.bptt.mode, **(parts.order.state(batches_done) or {})},
            "carry": gather_ranks(parts.fabric, carry),  # one entry per rank
            "accumulated": gather_ranks(parts.fabric, grads),
        }

    def restore(self, state: dict[str, Any], parts: LoopParts) -> None:
        """Continue where a checkpoint's trainer ``state`` stood (carry, summed gradients)."""
        saved = state.get("sequence") or {}
        if saved.get("mode") not in (None, self.bptt.mode):
            raise ValueError(f"the checkpoint was trained with bptt mode {saved.get('mode')!r}, not {self.bptt.mode!r}")
        rank = parts.fabric.global_rank
        carries = state.get("carry") or [None]
        carry = carries[rank] if rank < len(carries) else None
        self.carry = carry.to(parts.fabric.device) if carry is not None else None
        accumulated = (state.get("accumulated") or [None])[rank]
        if accumulated is not None:
            for param, grad in zip(parts.policy.parameters(), accumulated, strict=True):
                param.grad = grad.to(param.device) if grad is not None else None
            self.accumulating = True


@dataclass
class SequenceValidation:
    """Per-frame loss and MAE over every val episode, run step by step with carried state.

    Running the LSTM over a chunk of steps from the carried state computes exactly what one
    step at a time computes (window 1, the state passed on), only in fewer calls.
    """

    lengths: np.ndarray  # val episode lengths
    batches: SequenceBatches

    def sums(self, parts: LoopParts, names: list[str]) -> torch.Tensor:
        fabric = parts.fabric
        sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=fabric.device)
        rows = val_rows(self.lengths, fabric.global_rank, fabric.world_size)
        group = max(1, parts.config.train.batch_size)
        for first in range(0, len(rows), group):
            batch = fabric.to_device(self.batches.__getitems__(rows[first : first + group]))
            state: torch.Tensor | None = None
            for lo in range(0, batch["mask"].shape[1], VAL_CHUNK):
                chunk = {k: v[:, lo : lo + VAL_CHUNK] for k, v in batch.items() if v.ndim >= 2}
                predictions = parts.model(*time_inputs(parts.pipeline, chunk), state=state)
                state = predictions[STATE_KEY]
                mask = chunk["mask"].reshape(-1).double()
                per_frame = per_frame_terms(parts, predictions, chunk)
                terms = [(per_frame[name].double() * mask).sum() for name in names]
                sums += torch.stack([*terms, mask.sum()])
        return sums
