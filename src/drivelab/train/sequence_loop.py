"""The training loop over sequences: a recurrent policy trained with F-BPTT, WW-TBPTT or S-TBPTT.

It is the frame loop (`drivelab.train.loop.TrainLoop`: logging, boundaries, checkpoints, NaN
checks) with three things replaced:

- the step reads a sequence batch (`drivelab.train.sequences`), runs the policy over time from
  the row's initial state (zeros, a no-gradient warmup over earlier frames, or — sliding — the
  state the row ended the previous batch with, detached) and averages the per-frame losses over
  the real (unmasked) frames;
- validation runs every val episode whole, step after step with the state carried: kkelchte's
  "window 1, sliding" evaluation, and what the runtime does when it drives;
- the trainer state adds what the next batch depends on beyond the frame loop's: the sampler's
  position (per-row cursors for sliding), the carried (h, c) of every row, and the gradients
  summed so far when ``accumulate`` is on. So N + resume + N batches equal 2N, in every mode.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from drivelab.config import ExperimentConfig
from drivelab.models.recurrent import STATE_KEY
from drivelab.train.inputs import TrainInputs, make_loader
from drivelab.train.loop import TrainLoop
from drivelab.train.optimizers import set_learning_rate
from drivelab.train.sequences import (
    FullSampler,
    SequenceBatches,
    build_sampler,
    check_sequence_data,
    sequence_inputs,
    val_rows,
    warn_if_cut_drops,
)

#: Validation runs val episodes through the LSTM this many steps at a time (state carried).
VAL_CHUNK = 256


def sequence_probe(config: ExperimentConfig, inputs: TrainInputs, world_size: int) -> Any:
    """Check the data fits the sequences asked for (one error line) and size an epoch.

    Runs before a run folder exists; also warns when ``full``/``cut`` would drop many frames.
    """
    lengths = check_sequence_data(inputs.train, config.data.train_split)
    sampler = build_sampler(config.train.bptt, lengths, config.train.batch_size, config.seed, 0, world_size)
    if isinstance(sampler, FullSampler):
        warn_if_cut_drops(sampler)
    return sampler


@dataclass
class SequenceLoop(TrainLoop):
    """`TrainLoop` for `RecurrentPolicy`: sequence steps, carried-state validation, BPTT state."""

    val_lengths: Any = None  # np.ndarray of val episode lengths (None without validation)
    val_batches: SequenceBatches | None = None
    carry: torch.Tensor | None = None  # sliding: [2, layers, B, hidden], detached
    accumulating: bool = False  # sliding + accumulate: gradients summed since the last update

    @classmethod
    def from_frame_loop(
        cls, loop: TrainLoop, inputs: TrainInputs, state: dict[str, Any] | None
    ) -> SequenceLoop:
        """The frame loop the trainer built, with sequence sampling, loaders and state."""
        config = loop.config
        rank, world = loop.fabric.global_rank, loop.fabric.world_size
        lengths = check_sequence_data(inputs.train, config.data.train_split)
        saved = state.get("sequence") if state is not None else None
        sampler = build_sampler(
            config.train.bptt, lengths, config.train.batch_size, config.seed, rank, world,
            state=saved, batches_done=loop.batches_done,
        )
        pin = loop.fabric.device.type == "cuda"
        train_loader = make_loader(
            sequence_inputs(config, inputs.train), sampler, config.data.workers, pin, config.seed
        )
        values = {f.name: getattr(loop, f.name) for f in fields(TrainLoop)}
        values.update(sampler=sampler, train_loader=train_loader, val_loader=None)
        new = cls(**values)
        if inputs.val is not None:
            new.val_lengths = check_sequence_data(inputs.val, config.data.val_split or "val")
            new.val_batches = SequenceBatches(inputs.val)
            new.val_loader = new.val_batches  # type: ignore[assignment]  # "validation is on"
        if state is not None:
            new._restore(state, rank)
        return new

    # ------------------------------------------------------------------ step
    def _inputs(self, batch: dict[str, torch.Tensor], prefix: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 [B, T, 3k, H, W] (+ history) -> the pipeline's float inputs, time kept."""
        frames = batch[f"{prefix}frames"]
        b, t = frames.shape[:2]
        flat = self.pipeline.frames(frames.reshape(b * t, *frames.shape[2:]))
        history = batch.get(f"{prefix}history")
        if history is not None:
            history = self.pipeline.history(history)
        return flat.reshape(b, t, *flat.shape[1:]), history

    def _initial_state(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        bptt = self.config.train.bptt
        if bptt.mode == "sliding" and self.carry is not None:
            keep = (~batch["reset"]).to(self.carry.dtype).view(1, 1, -1, 1)
            return self.carry.to(batch["mask"].device) * keep
        if bptt.initial_state == "warmup" and "warmup/frames" in batch:
            frames, history = self._inputs(batch, "warmup/")
            with torch.no_grad():
                warm = self.model(frames, history, lengths=batch["warmup/lengths"])
            return warm[STATE_KEY].detach()
        return None

    def _masked_terms(
        self, predictions: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Per-frame objective over the real frames: (loss, detached means, frames counted)."""
        mask = batch["mask"].reshape(-1)
        n = mask.numel()
        flat_pred = {k: v.reshape(n, *v.shape[2:]) for k, v in predictions.items() if k != STATE_KEY}
        flat_batch = {k: v.reshape(n, -1) for k, v in batch.items() if k.startswith("target/")}
        per_frame = self.objective.per_sample(flat_pred, flat_batch)
        count = mask.sum().clamp_min(1.0)
        means = {k: (v.float() * mask).sum() / count for k, v in per_frame.items()}
        return means["loss"], {k: v.detach() for k, v in means.items()}, mask.sum().detach()

    def _step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One sequence batch: forward over time, masked loss, backward, (maybe) update."""
        bptt = self.config.train.bptt
        set_learning_rate(self.optimizer, self.schedule(self.batches_done))
        freeze = getattr(self, "freeze", None)  # model.freeze (transfer learning)
        if freeze is not None:
            freeze.apply(self.policy, self.batches_done)
        with self._memory_guard(f"batch {self.batches_done + 1}"):
            state = self._initial_state(batch)
            frames, history = self._inputs(batch)
            keep_at = bptt.stride if bptt.mode == "sliding" and bptt.stride < bptt.window else None
            predictions = self.model(frames, history, state=state, keep_at=keep_at)
            if bptt.mode == "sliding":
                self.carry = predictions[STATE_KEY].detach()
            loss, logged, _ = self._masked_terms(predictions, batch)
            if not self.accumulating:
                self.optimizer.zero_grad(set_to_none=True)
            self.fabric.backward(loss)
            values = [logged[n] for n in self.names if n != "grad_norm"]
            update = (
                not bptt.accumulate
                or bool(batch["last"].any())
                or self.batches_done + 1 >= self.total_batches
            )
            clip = self.config.train.grad_clip
            if clip is not None:
                norm = self.fabric.clip_gradients(
                    self.model, self.optimizer, max_norm=clip if update else float("inf"),
                    error_if_nonfinite=False,
                )
                values.append(norm.detach().float())
            if update:
                self.optimizer.step()
            self.accumulating = not update
        return torch.stack([v.float() for v in values])

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Per-frame loss and MAE over every val episode, run step by step with carried state.

        Running the LSTM over a chunk of steps from the carried state computes exactly what one
        step at a time computes (window 1, the state passed on), only in fewer calls.
        """
        assert self.val_batches is not None and self.val_lengths is not None
        names = self.objective.metric_names(with_aux=self._has_aux())
        device = self.fabric.device
        sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=device)
        rows = val_rows(self.val_lengths, self.fabric.global_rank, self.fabric.world_size)
        group = max(1, self.config.train.batch_size)
        self.model.eval()
        try:
            with self._memory_guard(f"validation after batch {self.batches_done}"):
                for first in range(0, len(rows), group):
                    part = rows[first : first + group]
                    batch = self.fabric.to_device(self.val_batches.__getitems__(part))
                    steps = batch["mask"].shape[1]
                    state: torch.Tensor | None = None
                    for lo in range(0, steps, VAL_CHUNK):
                        chunk = {k: v[:, lo : lo + VAL_CHUNK] for k, v in batch.items() if v.ndim >= 2}
                        frames, history = self._inputs(chunk)
                        predictions = self.model(frames, history, state=state)
                        state = predictions[STATE_KEY]
                        mask = chunk["mask"].reshape(-1).double()
                        n = mask.numel()
                        flat_pred = {
                            k: v.reshape(n, *v.shape[2:]) for k, v in predictions.items() if k != STATE_KEY
                        }
                        flat_batch = {k: v.reshape(n, -1) for k, v in chunk.items() if k.startswith("target/")}
                        per_frame = self.objective.per_sample(flat_pred, flat_batch)
                        parts = [(per_frame[name].double() * mask).sum() for name in names]
                        sums += torch.stack([*parts, mask.sum()])
        finally:
            self.model.train()
        return self._validation_means(sums, names)

    # ------------------------------------------------------------------ checkpoints
    def trainer_state(self) -> dict[str, Any]:
        """The frame loop's state plus the sampler position, carried states and summed grads."""
        state = super().trainer_state()
        carry = self.carry.detach().cpu().clone() if self.carry is not None else None
        grads = None
        if self.accumulating:
            grads = [p.grad.detach().cpu().clone() if p.grad is not None else None for p in self.policy.parameters()]
        state["sequence"] = {
            "mode": self.config.train.bptt.mode,
            **self.sampler.state(self.batches_done),  # type: ignore[attr-defined]
        }
        state["carry"] = self._gather(carry)  # one entry per rank
        state["accumulated"] = self._gather(grads)
        return state

    def _restore(self, state: dict[str, Any], rank: int) -> None:
        saved = state.get("sequence") or {}
        mode = self.config.train.bptt.mode
        if saved.get("mode") not in (None, mode):
            raise ValueError(f"the checkpoint was trained with bptt mode {saved.get('mode')!r}, not {mode!r}")
        carries = state.get("carry") or [None]
        carry = carries[rank] if rank < len(carries) else None
        self.carry = carry.to(self.fabric.device) if carry is not None else None
        accumulated = (state.get("accumulated") or [None])[rank]
        if accumulated is not None:
            for param, grad in zip(self.policy.parameters(), accumulated, strict=True):
                param.grad = grad.to(param.device) if grad is not None else None
            self.accumulating = True
