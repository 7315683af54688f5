"""The parity check: onnxruntime against the torch runtime's own arithmetic, on recorded frames.

The reference is what `evaluate.runtime.PolicyRuntime.act` and its driver compute for a sample:
`InputPipeline` -> the policy -> `Policy.actions` -> `DeltaActions.actions` -> clipping to the
action range (for a stateful kind, its ``step`` with the state carried, step by
step). The exported graph is run on the same samples at batch sizes other than the export
example's, and a recurrent graph also on sequence lengths other than the example's, with the
state carried from call to call. Every output's largest absolute difference is kept per case;
`ParityReport.check` fails the export when one exceeds the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from drivelab.errors import DrivelabError
from drivelab.export.graph import EXAMPLE_BATCH, EXAMPLE_STEPS
from drivelab.export.metadata import (
    FRAMES,
    HISTORY,
    LAST_ACTION,
    LOGITS_SUFFIX,
    STATE,
    STATE_OUT,
    ActionInfo,
)
from drivelab.export.samples import EpisodeSamples
from drivelab.models.kinds import kind_of
from drivelab.models.policy import Policy
from drivelab.processor.layout import DeltaActions
from drivelab.processor.pipeline import InputPipeline
from drivelab.processor.state import ProcessorState

#: Batch sizes the frame graph is checked at (the example's is EXAMPLE_BATCH).
FRAME_BATCHES = (1, 7)
#: (batch, steps per call) the recurrent graph is checked at, the state carried between calls.
SEQUENCE_SHAPES = ((1, 1), (3, 5))
DEFAULT_TOLERANCE = 1e-4

Outputs = dict[str, np.ndarray]
assert EXAMPLE_BATCH not in FRAME_BATCHES and all(s != EXAMPLE_STEPS for _, s in SEQUENCE_SHAPES)


class ParityError(DrivelabError):
    """The exported graph and the torch runtime disagree beyond the tolerance."""


@dataclass
class ParityReport:
    """Max |onnxruntime - torch| per output, per case (``batch 1``, ``batch 3 x 5 steps``)."""

    cases: dict[str, dict[str, float]] = field(default_factory=dict)
    frames: int = 0
    #: output -> (case, which engine(s)) where it was NaN or infinite first
    non_finite: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, case: str, onnx_out: Outputs, torch_out: Outputs) -> None:
        """Keep each output's largest difference; a NaN or infinite value anywhere is kept apart.

        A difference of two NaNs is NaN, and every comparison with NaN is false: without this,
        an all-NaN policy "passed" with a difference of 0.
        """
        diffs = self.cases.setdefault(case, {})
        for name, expected in torch_out.items():
            got = onnx_out[name].astype(np.float64)
            bad = [engine for engine, values in (("torch runtime", expected), ("onnxruntime", got))
                   if not np.isfinite(values).all()]
            if bad:
                self.non_finite.setdefault(name, (case, " and ".join(bad)))
                diffs[name] = math.inf
                continue
            diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
            diffs[name] = max(diffs.get(name, 0.0), diff)

    def worst(self) -> dict[str, float]:
        """Each output's largest difference over all cases."""
        out: dict[str, float] = {}
        for diffs in self.cases.values():
            for name, diff in diffs.items():
                out[name] = max(out.get(name, 0.0), diff)
        return out

    def check(self, tolerance: float, label: str) -> None:
        """One `ParityError` line naming the worst output, its difference and its case (or the
        first output that was not finite: no tolerance makes a NaN action usable)."""
        if self.non_finite:
            name, (case, engines) = next(iter(self.non_finite.items()))
            raise ParityError(
                f"{label}: parity failed: output {name!r} is NaN or infinite in the {engines} at "
                f"{case} on recorded frames: the checkpoint answers no usable action; nothing was written"
            )
        case, name, diff = max(((c, n, d) for c, ds in self.cases.items() for n, d in ds.items()),
                               key=lambda item: item[2])
        if not diff <= tolerance:  # NaN fails too
            raise ParityError(
                f"{label}: parity failed: output {name!r} differs by {diff:.3g} (> tolerance "
                f"{tolerance:g}) at {case}; nothing was written"
            )


class TorchReference:
    """The torch runtime's computation on a batch of raw samples (see the module docstring)."""

    def __init__(self, policy: Policy, processor: ProcessorState, actions: list[ActionInfo]) -> None:
        self.policy = policy
        self.kind = kind_of(policy)
        self.pipeline = InputPipeline(processor)
        self.actions = actions
        self.delta = DeltaActions(tuple(processor.targets.delta), processor.targets.delta)

    def frames(self, s: EpisodeSamples) -> Outputs:
        batch = {"frames": torch.from_numpy(s.frames)}
        if s.history is not None:
            batch["history"] = torch.from_numpy(s.history)
        with torch.inference_mode():
            results = self.policy(*self.pipeline(batch))
        return self._finish(results, s.last_action)

    def steps(self, s: EpisodeSamples, state: torch.Tensor | None) -> tuple[Outputs, torch.Tensor]:
        """[B, L, ...] samples stepped one step at a time with ``state`` carried (the runtime)."""
        per_step: list[Outputs] = []
        for t in range(s.frames.shape[1]):
            batch = {"frames": torch.from_numpy(s.frames[:, t])}
            if s.history is not None:
                batch["history"] = torch.from_numpy(s.history[:, t])
            with torch.inference_mode():
                results, state = self.kind.step(self.policy, *self.pipeline(batch), state)
            per_step.append(self._finish(results, None if s.last_action is None else s.last_action[:, t]))
        assert state is not None
        out = {k: np.stack([o[k] for o in per_step], axis=1) for k in per_step[0]}
        out[STATE_OUT] = state.numpy().astype(np.float64)
        return out, state

    def _finish(self, results: dict[str, torch.Tensor], last: np.ndarray | None) -> Outputs:
        values = {k: v.numpy() for k, v in self.policy.actions(results).items()}
        rows = []
        for i in range(len(next(iter(values.values())))):
            telemetry = {a.name: last[i, a.delta_index] for a in self.actions if a.delta_index is not None}
            assert last is not None or not telemetry
            row = self.delta.actions({k: float(v[i]) for k, v in values.items()}, telemetry)
            rows.append(row)
        out: Outputs = {}
        for a in self.actions:
            column = np.array([row[a.name] for row in rows], np.float64)
            out[a.name] = np.clip(column, -np.inf if a.low is None else a.low, np.inf if a.high is None else a.high)
            if a.bins is not None:
                out[a.name + LOGITS_SUFFIX] = results[a.name].numpy().astype(np.float64)
        return out


def feed(s: EpisodeSamples, state: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The ONNX inputs for ``s`` (and the LSTM state), by input name."""
    out = {FRAMES: s.frames}
    if s.history is not None:
        out[HISTORY] = s.history.astype(np.float32)
    if s.last_action is not None:
        out[LAST_ACTION] = s.last_action.astype(np.float32)
    if state is not None:
        out[STATE] = state.astype(np.float32)
    return out


def check_frame_policy(run: Callable[[dict[str, np.ndarray]], Outputs], reference: TorchReference,
                       episodes: list[EpisodeSamples]) -> ParityReport:
    """Every sample at each of `FRAME_BATCHES`, in chunks."""
    report = ParityReport(frames=sum(len(e) for e in episodes))
    for size in FRAME_BATCHES:
        for samples in episodes:
            for start in range(0, len(samples), size):
                chunk = samples.take(start, start + size)
                report.add(f"batch {size}", run(feed(chunk)), reference.frames(chunk))
    return report


def check_recurrent_policy(run: Callable[[dict[str, np.ndarray]], Outputs], reference: TorchReference,
                           episodes: list[EpisodeSamples]) -> ParityReport:
    """`SEQUENCE_SHAPES` over the longest episode, the state carried by both engines.

    Each of ``batch`` rows is a stretch of the episode (up to 24 steps, at least two calls),
    starting at a different step, fed ``steps`` at a time.
    """
    policy, kind = reference.policy, reference.kind
    longest = max(episodes, key=len)
    report = ParityReport(frames=sum(len(e) for e in episodes))
    for batch, steps in SEQUENCE_SHAPES:
        total = max(2 * steps, min(len(longest) // 2, 24) // steps * steps)
        if len(longest) < total + batch - 1:
            raise ParityError(f"the longest episode read has {len(longest)} frames: too short for "
                              f"{batch} sequences of {total} steps; pass more --frames")
        offset = (len(longest) - total) // (batch - 1) if batch > 1 else 0
        rows = _stack([longest.take(b * offset, b * offset + total) for b in range(batch)])
        zero = kind.zero_state(policy, batch, "cpu")
        assert zero is not None  # a graph with a state input
        onnx_state = zero.numpy()
        torch_state: torch.Tensor | None = None
        for start in range(0, total, steps):
            chunk = rows.take_steps(start, start + steps)
            got = run(feed(chunk, onnx_state))
            expected, torch_state = reference.steps(chunk, torch_state)
            onnx_state = got[STATE_OUT]
            report.add(f"batch {batch} x {steps} steps", got, expected)
    return report


def _stack(rows: list[EpisodeSamples]) -> EpisodeSamples:
    """Equal-length stretches -> one batch of sequences [B, L, ...]."""
    first = rows[0]
    return EpisodeSamples(
        np.stack([r.frames for r in rows]),
        None if first.history is None else np.stack([r.history for r in rows]),  # type: ignore[misc]
        None if first.last_action is None else np.stack([r.last_action for r in rows]),  # type: ignore[misc]
    )
