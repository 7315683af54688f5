"""The training loop: one step per batch, and what happens at the batch boundaries.

A step reads a batch (data wait), turns its frames into floats on the device, runs the policy,
the objective, backward, clipping and the optimizer (compute). Per-step values stay on the device
until a boundary — a log row, a validation, a checkpoint or the end — so a GPU is never forced to
synchronise on every batch; at a boundary they are averaged over all ranks, checked for NaN/Inf
and written. The order at a boundary is fixed (check, validate, checkpoint) and validation
touches no random generator, so a run resumed from checkpoint N computes exactly what an
uninterrupted run computes after batch N.

What differs between frame batches, helper models and BPTT sequences is the forward/backward of
a step and a validation pass: a `drivelab.train.steps.StepKind` and `Validation`, chosen once
when the period is set up (`drivelab.train.period`); the loop around them is this one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import torch

from drivelab.errors import DrivelabError
from drivelab.runs.checkpoints import capture_rng_state, save_checkpoint
from drivelab.runs.folder import RunFolder
from drivelab.train.logs import MetricsLog
from drivelab.train.optimizers import set_learning_rate
from drivelab.train.steps import LoopParts, StepKind, Validation, gather_ranks

STATE_FORMAT = "drivelab.trainer_state"
STATE_VERSION = 1


class TrainingStopped(DrivelabError):
    """Training cannot go on (non-finite loss, out of memory); checkpoints so far are kept."""


class ProgressSink(Protocol):
    """Where the loop reports progress (a rich bar in the CLI); called on rank 0 only."""

    def start(self, total: int, done: int) -> None: ...

    def advance(self, done: int) -> None: ...

    def show(self, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


@dataclass
class StepWindow:
    """Per-step values and timings since the last log row (device tensors until flushed)."""

    values: list[torch.Tensor] = field(default_factory=list)
    first_batch: int = 0
    data_wait: float = 0.0
    compute: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def reset(self, first_batch: int) -> None:
        self.values.clear()
        self.first_batch = first_batch
        self.data_wait = self.compute = 0.0
        self.started = time.perf_counter()


@dataclass
class LoopRecords:
    """Where the loop writes: the run folder's period, its metric rows, the progress bar."""

    run: RunFolder
    period: int
    log: MetricsLog | None = None  # rank 0 only
    progress: ProgressSink | None = None  # rank 0 only


@dataclass
class TrainLoop:
    """One training period: steps of one kind, and the boundaries between them."""

    parts: LoopParts  # what it reads
    kind: StepKind  # frame batch, helper models or BPTT sequence
    validation: Validation | None  # None: no val split
    records: LoopRecords  # where it writes
    total_batches: int
    batches_done: int
    last_checkpoint: int | None = None
    last_values: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # the logged values of a step, in order
    ranks: list[dict[str, Any]] = field(default_factory=list)  # per-rank report of the period

    # ------------------------------------------------------------------ main loop
    def run_period(self) -> None:
        """Train from ``batches_done`` to ``total_batches``, stopping cleanly on a bad loss."""
        parts, progress = self.parts, self.records.progress
        self.names = parts.objective.metric_names(with_aux=self._has_aux())
        if parts.config.train.grad_clip is not None:
            self.names.append("grad_norm")
        if progress is not None:
            progress.start(self.total_batches, self.batches_done)
        if self.batches_done == 0 and self.validation is not None:
            # The untrained policy's val loss: the baseline every later point is judged against.
            self.last_val = self.validate()
            if self.records.log is not None:
                self.records.log.write(0, self.last_val, epoch=0)
        window = StepWindow(first_batch=self.batches_done)
        period_start = self.batches_done
        batches: Iterator[dict[str, torch.Tensor]] = iter(parts.train_loader)
        try:
            while self.batches_done < self.total_batches:
                t0 = time.perf_counter()
                batch = parts.fabric.to_device(next(batches))
                t1 = time.perf_counter()
                window.values.append(self._step(batch))
                self.batches_done += 1
                window.data_wait += t1 - t0
                window.compute += time.perf_counter() - t1
                if progress is not None:
                    progress.advance(self.batches_done)
                self._boundary(window)
        finally:
            del batches  # shuts the loader's worker processes down now, not at exit
        trained = self.batches_done - period_start
        self.ranks = gather_ranks(parts.fabric, {
            "rank": parts.fabric.global_rank,
            "pid": os.getpid(),
            "device": str(parts.fabric.device),
            "batches": trained,
            "samples": trained * parts.order.batch_size,
        })

    def _has_aux(self) -> bool:
        history = self.parts.config.model.history
        return history is not None and history.aux_weight > 0

    def _step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimisation step; returns the logged values as one detached device vector."""
        parts, done = self.parts, self.batches_done
        set_learning_rate(parts.optimizer, parts.schedule(done))
        if parts.freeze is not None:
            parts.freeze.apply(parts.policy, done)
        with self._memory_guard(f"batch {done + 1}"):
            logged, update = self.kind.backward(parts, batch, done)
            values = [logged[n] for n in self.names if n != "grad_norm"]
            clip = parts.config.train.grad_clip
            if clip is not None:  # (not updating: the norm is logged, nothing clipped yet)
                norm = parts.fabric.clip_gradients(
                    parts.model, parts.optimizer, max_norm=clip if update else float("inf"),
                    error_if_nonfinite=False,
                )
                values.append(norm.detach().float())
            if update:
                parts.optimizer.step()
        return torch.stack([v.float() for v in values])

    @contextmanager
    def _memory_guard(self, what: str) -> Iterator[None]:
        """Turn an out-of-memory error (GPU or host) into advice about the batch size."""
        try:
            yield
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            text = str(exc)
            if not isinstance(exc, torch.OutOfMemoryError) and not (
                "can't allocate memory" in text or "not enough memory" in text
            ):
                raise
            size = self.parts.config.train.batch_size
            first = text.splitlines()[0][:100] if text else type(exc).__name__
            raise TrainingStopped(
                f"{what} ran out of memory on {self.parts.fabric.device} with train.batch_size={size}: "
                f"try train.batch_size={max(size // 2, 1)} ({first})"
            ) from None

    # ------------------------------------------------------------------ boundaries
    def _boundary(self, window: StepWindow) -> None:
        train = self.parts.config.train
        done = self.batches_done
        last = done >= self.total_batches
        due_val = self.validation is not None and (
            last or (train.val_every is not None and done % train.val_every == 0)
        )
        due_checkpoint = last or done % train.checkpoint_every == 0
        if not (last or due_val or due_checkpoint or done % train.log_every == 0):
            return
        self._flush(window)
        if due_val:
            self.last_val = self.validate()
            if self.records.log is not None:
                self.records.log.write(done, self.last_val, epoch=self.parts.order.position(done)[0])
            if self.records.progress is not None and self.last_values:  # the bar ends on the summary's values
                self.records.progress.show({"loss": self.last_values["loss"], **self.last_val})
        if due_checkpoint:
            self.checkpoint()
        window.reset(done)

    def _flush(self, window: StepWindow) -> None:
        """Average the window over steps and ranks, stop on NaN/Inf, write the log row."""
        steps = len(window.values)
        if steps == 0:
            return
        fabric = self.parts.fabric
        stacked = torch.stack(window.values)  # [steps, values]
        if fabric.world_size > 1:
            stacked = fabric.all_reduce(stacked, reduce_op="mean")
        per_step = stacked.cpu()
        finite = torch.isfinite(per_step)
        if "grad_norm" in self.names and getattr(fabric.strategy.precision, "scaler", None):
            # fp16 loss scaling overflows now and then by design; the scaler skips those steps.
            finite[:, self.names.index("grad_norm")] = True
        if not bool(finite.all()):
            self._stop_non_finite(window, per_step, finite)
        elapsed = max(time.perf_counter() - window.started, 1e-9)
        values = dict(zip(self.names, per_step.mean(dim=0).tolist(), strict=True))
        values.update(
            lr=self.parts.schedule(self.batches_done - 1),
            samples_per_s=steps * self.parts.order.global_batch / elapsed,
            data_wait_s=window.data_wait / steps,
            compute_s=window.compute / steps,
            data_wait_share=window.data_wait / max(window.data_wait + window.compute, 1e-9),
        )
        self.last_values = values
        if self.records.log is not None:
            epoch, _ = self.parts.order.position(self.batches_done)
            self.records.log.write(self.batches_done, values, epoch=epoch)
        if self.records.progress is not None:
            self.records.progress.show({"loss": values["loss"], **self.last_val})

    def _stop_non_finite(self, window: StepWindow, per_step: torch.Tensor, finite: torch.Tensor) -> NoReturn:
        """Name the first step whose loss or gradient norm is NaN/Inf, and the checkpoint kept."""
        first = int((~finite.all(dim=1)).nonzero()[0, 0])
        bad = dict(zip(self.names, per_step[first].tolist(), strict=True))
        detail = ", ".join(f"{k}={v:.4g}" for k, v in bad.items() if not math.isfinite(v))
        kept = f"batch_{self.last_checkpoint}" if self.last_checkpoint else "none yet"
        what = "loss" if not math.isfinite(bad["loss"]) else "gradient norm"
        raise TrainingStopped(
            f"non-finite {what} at batch {window.first_batch + first + 1} ({detail}): training "
            f"stopped; last good checkpoint: {kept}. Lower train.lr or set train.grad_clip"
        )

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss and MAE per output over the whole val split (every rank a share, then summed)."""
        assert self.validation is not None
        parts = self.parts
        names = parts.objective.metric_names(with_aux=self._has_aux())
        parts.model.eval()
        try:
            with self._memory_guard(f"validation after batch {self.batches_done}"):
                sums = self.validation.sums(parts, names)
        finally:
            parts.model.train()
        if parts.fabric.world_size > 1:
            sums = parts.fabric.all_reduce(sums, reduce_op="sum")
        totals = sums.cpu().tolist()
        count = max(totals[-1], 1.0)
        return {f"val/{n}": s / count for n, s in zip(names, totals[:-1], strict=True)}

    # ------------------------------------------------------------------ checkpoints
    def trainer_state(self) -> dict[str, Any]:
        """Everything but the weights that batch ``batches_done + 1`` depends on."""
        parts, done = self.parts, self.batches_done
        epoch, in_epoch = parts.order.position(done)
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "batch": done,
            "epoch": epoch,
            "batch_in_epoch": in_epoch,
            "samples_seen": done * parts.order.global_batch,
            "world_size": parts.fabric.world_size,
            "optimizer": parts.optimizer.state_dict(),
            "schedule": parts.schedule.state(),
            "precision": parts.fabric.strategy.precision.state_dict(),  # fp16 loss scaler
            "rng": gather_ranks(parts.fabric, capture_rng_state()),  # one entry per rank
            # balancing buffers (v2/v3), sequence positions: where the order stands, every rank
            "sampler": parts.order.state(done),
        }
        state.update(self.kind.state(parts, done))  # collective under DDP, like "rng"
        return state

    def checkpoint(self) -> None:
        """Rank 0 writes ``batch_<N>``; every rank waits for it so none runs ahead of a kill."""
        fabric, run = self.parts.fabric, self.records.run
        weights = self.parts.policy.state_dict()
        # DDP keeps the weights equal on every rank, so every rank reaches the same verdict.
        broken = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if broken:
            raise TrainingStopped(
                f"weights hold NaN/Inf after batch {self.batches_done} ({broken[0]}): not "
                f"saved; last good checkpoint: batch_{self.last_checkpoint}. Lower train.lr or "
                "set train.grad_clip"
            )
        state = self.trainer_state()  # collective under DDP: every rank takes part
        if fabric.is_global_zero:
            save_checkpoint(
                run.checkpoints,
                self.batches_done,
                weights,
                state,
                metadata={"run": run.name, "line": run.line},
            )
            run.update_period(self.records.period, last_batch=self.batches_done)
            run.write_status("training", last_checkpoint=self.batches_done)
            if self.records.log is not None:
                self.records.log.flush()
        self.last_checkpoint = self.batches_done
        fabric.barrier()
