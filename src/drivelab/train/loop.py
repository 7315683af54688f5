"""The training loop: one step per batch, and what happens at the batch boundaries.

A step reads a batch (data wait), turns its frames into floats on the device, runs the policy,
the objective, backward, clipping and the optimizer (compute). Per-step values stay on the device
until a boundary — a log row, a validation, a checkpoint or the end — so a GPU is never forced to
synchronise on every batch; at a boundary they are averaged over all ranks, checked for NaN/Inf
and written. The order at a boundary is fixed (check, validate, checkpoint) and validation
touches no random generator, so a run resumed from checkpoint N computes exactly what an
uninterrupted run computes after batch N.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from lightning_fabric import Fabric
from torch.utils.data import DataLoader

from drivelab.config import ExperimentConfig
from drivelab.errors import DrivelabError
from drivelab.models.objectives import Objective
from drivelab.models.transfer import FreezePlan
from drivelab.processor.pipeline import InputPipeline
from drivelab.runs.checkpoints import capture_rng_state, save_checkpoint
from drivelab.runs.folder import RunFolder
from drivelab.train.helper_models import helper_backward, split_by_output
from drivelab.train.inputs import EpochBatchSampler
from drivelab.train.logs import MetricsLog
from drivelab.train.optimizers import set_learning_rate
from drivelab.train.schedules import LRSchedule

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
class TrainLoop:
    """Everything one training period needs, set up by `drivelab.train.trainer.train`."""

    fabric: Fabric
    config: ExperimentConfig
    policy: torch.nn.Module  # the plain module (its weights are what checkpoints hold)
    model: Any  # the Fabric-wrapped module used for forward passes
    optimizer: Any
    objective: Objective
    pipeline: InputPipeline
    schedule: LRSchedule
    sampler: EpochBatchSampler
    train_loader: DataLoader
    val_loader: DataLoader | None
    run: RunFolder
    total_batches: int
    batches_done: int
    period: int
    log: MetricsLog | None = None  # rank 0 only
    progress: ProgressSink | None = None  # rank 0 only
    last_checkpoint: int | None = None
    last_values: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    ranks: list[dict[str, Any]] = field(default_factory=list)  # per-rank report of the period
    freeze: FreezePlan | None = None  # model.freeze: applied before every step (unfreeze_at)

    # ------------------------------------------------------------------ main loop
    def run_period(self) -> None:
        """Train from ``batches_done`` to ``total_batches``, stopping cleanly on a bad loss."""
        train = self.config.train
        self.names = self.objective.metric_names(with_aux=self._has_aux())
        if train.grad_clip is not None:
            self.names.append("grad_norm")
        if self.progress is not None:
            self.progress.start(self.total_batches, self.batches_done)
        if self.batches_done == 0 and self.val_loader is not None:
            # The untrained policy's val loss: the baseline every later point is judged against.
            self.last_val = self.validate()
            if self.log is not None:
                self.log.write(0, self.last_val, epoch=0)
        window = StepWindow(first_batch=self.batches_done)
        period_start = self.batches_done
        batches: Iterator[dict[str, torch.Tensor]] = iter(self.train_loader)
        try:
            while self.batches_done < self.total_batches:
                t0 = time.perf_counter()
                batch = self.fabric.to_device(next(batches))
                t1 = time.perf_counter()
                window.values.append(self._step(batch))
                self.batches_done += 1
                window.data_wait += t1 - t0
                window.compute += time.perf_counter() - t1
                if self.progress is not None:
                    self.progress.advance(self.batches_done)
                self._boundary(window)
        finally:
            del batches  # shuts the loader's worker processes down now, not at exit
        self.ranks = self._gather(
            {
                "rank": self.fabric.global_rank,
                "pid": os.getpid(),
                "device": str(self.fabric.device),
                "batches": self.batches_done - period_start,
                "samples": (self.batches_done - period_start) * self.sampler.batch_size,
            }
        )

    def _gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (a picklable object), in rank order, on every rank."""
        if self.fabric.world_size == 1:
            return [value]
        gathered: list[Any] = [None] * self.fabric.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def _has_aux(self) -> bool:
        history = self.config.model.history
        return history is not None and history.aux_weight > 0

    def _step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimisation step; returns the logged values as one detached device vector."""
        set_learning_rate(self.optimizer, self.schedule(self.batches_done))
        if self.freeze is not None:
            self.freeze.apply(self.policy, self.batches_done)
        with self._memory_guard(f"batch {self.batches_done + 1}"):
            helpers = getattr(self.sampler, "helper_outputs", None)
            if helpers:  # v2 balancing: one helper model per output, gradients summed
                self.optimizer.zero_grad(set_to_none=True)
                logged = helper_backward(
                    self.model, self.pipeline, self.objective,
                    split_by_output(batch, helpers, self.config.train.batch_size), helpers,
                    self.fabric.backward, lambda: self.fabric.no_backward_sync(self.model),
                )
            else:
                predictions = self.model(*self.pipeline(batch))
                terms = self.objective(predictions, batch)
                self.optimizer.zero_grad(set_to_none=True)
                self.fabric.backward(terms.total)
                logged = terms.values
            values = [logged[n] for n in self.names if n != "grad_norm"]
            clip = self.config.train.grad_clip
            if clip is not None:
                norm = self.fabric.clip_gradients(
                    self.model, self.optimizer, max_norm=clip, error_if_nonfinite=False
                )
                values.append(norm.detach().float())
            self.optimizer.step()
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
            size = self.config.train.batch_size
            first = text.splitlines()[0][:100] if text else type(exc).__name__
            raise TrainingStopped(
                f"{what} ran out of memory on {self.fabric.device} with train.batch_size={size}: "
                f"try train.batch_size={max(size // 2, 1)} ({first})"
            ) from None

    # ------------------------------------------------------------------ boundaries
    def _boundary(self, window: StepWindow) -> None:
        train = self.config.train
        done = self.batches_done
        last = done >= self.total_batches
        due_val = self.val_loader is not None and (
            last or (train.val_every is not None and done % train.val_every == 0)
        )
        due_checkpoint = last or done % train.checkpoint_every == 0
        if not (last or due_val or due_checkpoint or done % train.log_every == 0):
            return
        self._flush(window)
        if due_val:
            self.last_val = self.validate()
            if self.log is not None:
                self.log.write(done, self.last_val, epoch=self.sampler.position(done)[0])
        if due_checkpoint:
            self.checkpoint()
        window.reset(done)

    def _flush(self, window: StepWindow) -> None:
        """Average the window over steps and ranks, stop on NaN/Inf, write the log row."""
        steps = len(window.values)
        if steps == 0:
            return
        stacked = torch.stack(window.values)  # [steps, values]
        if self.fabric.world_size > 1:
            stacked = self.fabric.all_reduce(stacked, reduce_op="mean")
        per_step = stacked.cpu()
        finite = torch.isfinite(per_step)
        if "grad_norm" in self.names and getattr(self.fabric.strategy.precision, "scaler", None):
            # fp16 loss scaling overflows now and then by design; the scaler skips those steps.
            finite[:, self.names.index("grad_norm")] = True
        if not bool(finite.all()):
            first = int((~finite.all(dim=1)).nonzero()[0, 0])
            bad = dict(zip(self.names, per_step[first].tolist(), strict=True))
            detail = ", ".join(f"{k}={v:.4g}" for k, v in bad.items() if not math.isfinite(v))
            kept = f"batch_{self.last_checkpoint}" if self.last_checkpoint else "none yet"
            what = "loss" if not math.isfinite(bad["loss"]) else "gradient norm"
            raise TrainingStopped(
                f"non-finite {what} at batch {window.first_batch + first + 1} ({detail}): training "
                f"stopped; last good checkpoint: {kept}. Lower train.lr or set train.grad_clip"
            )
        means = per_step.mean(dim=0).tolist()
        elapsed = max(time.perf_counter() - window.started, 1e-9)
        samples = steps * self.sampler.global_batch
        values = dict(zip(self.names, means, strict=True))
        values.update(
            lr=self.schedule(self.batches_done - 1),
            samples_per_s=samples / elapsed,
            data_wait_s=window.data_wait / steps,
            compute_s=window.compute / steps,
            data_wait_share=window.data_wait / max(window.data_wait + window.compute, 1e-9),
        )
        self.last_values = values
        if self.log is not None:
            epoch, _ = self.sampler.position(self.batches_done)
            self.log.write(self.batches_done, values, epoch=epoch)
        if self.progress is not None:
            self.progress.show({"loss": values["loss"], **self.last_val})

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss and MAE per output over the whole val split (every rank a share, then summed)."""
        assert self.val_loader is not None
        names = self.objective.metric_names(with_aux=self._has_aux())
        sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=self.fabric.device)
        self.model.eval()
        try:
            with self._memory_guard(f"validation after batch {self.batches_done}"):
                for raw in self.val_loader:
                    batch = self.fabric.to_device(raw)
                    predictions = self.model(*self.pipeline(batch))
                    per_sample = self.objective.per_sample(predictions, batch)
                    valid = batch["valid"].to(torch.float64)
                    parts = [(per_sample[n].double() * valid).sum() for n in names]
                    sums += torch.stack([*parts, valid.sum()])
        finally:
            self.model.train()
        return self._validation_means(sums, names)

    def _validation_means(self, sums: torch.Tensor, names: list[str]) -> dict[str, float]:
        """Per-sample sums (+ the sample count, last) over all ranks -> ``val/<name>`` means."""
        if self.fabric.world_size > 1:
            sums = self.fabric.all_reduce(sums, reduce_op="sum")
        totals = sums.cpu().tolist()
        count = max(totals[-1], 1.0)
        return {f"val/{n}": s / count for n, s in zip(names, totals[:-1], strict=True)}

    # ------------------------------------------------------------------ checkpoints
    def trainer_state(self) -> dict[str, Any]:
        """Everything but the weights that batch ``batches_done + 1`` depends on."""
        epoch, in_epoch = self.sampler.position(self.batches_done)
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "batch": self.batches_done,
            "epoch": epoch,
            "batch_in_epoch": in_epoch,
            "samples_seen": self.batches_done * self.sampler.global_batch,
            "world_size": self.fabric.world_size,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state(),
            "precision": self.fabric.strategy.precision.state_dict(),  # fp16 loss scaler
            "rng": self._gather(capture_rng_state()),  # one entry per rank
            # balancing buffers (v2/v3): where the draws stand; identical on every rank
            "sampler": getattr(self.sampler, "state", lambda _n: None)(self.batches_done),
        }

    def checkpoint(self) -> None:
        """Rank 0 writes ``batch_<N>``; every rank waits for it so none runs ahead of a kill."""
        weights = self.policy.state_dict()
        # DDP keeps the weights equal on every rank, so every rank reaches the same verdict.
        broken = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if broken:
            raise TrainingStopped(
                f"weights hold NaN/Inf after batch {self.batches_done} ({broken[0]}): not "
                f"saved; last good checkpoint: batch_{self.last_checkpoint}. Lower train.lr or "
                "set train.grad_clip"
            )
        state = self.trainer_state()  # collective under DDP: every rank takes part
        if self.fabric.is_global_zero:
            save_checkpoint(
                self.run.checkpoints,
                self.batches_done,
                weights,
                state,
                metadata={"run": self.run.name, "line": self.run.line},
            )
            self.run.update_period(self.period, last_batch=self.batches_done)
            self.run.write_status("training", last_checkpoint=self.batches_done)
            if self.log is not None:
                self.log.flush()
        self.last_checkpoint = self.batches_done
        self.fabric.barrier()
