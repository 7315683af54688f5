"""Offline metrics: how well a run predicts the expert's actions on a recorded split.

Closed-loop driving is the real test, but it is slow and noisy; scoring predictions on a held-out
split is quick and repeatable, and it is what Charles compared his Keras models by
(``<output>_loss``, ``<output>_mean_absolute_error``). The policy is loaded exactly as the
closed-loop runtime loads it (its config, weights and the run's `ProcessorState`), and samples
are laid out exactly as in training (the loader's frame stack and history window), so the
numbers here are the trainer's validation numbers, on any split or on another dataset recorded
with the same signals.

Per output: MSE and MAE in action units (a classification head is scored on its argmax bin's
value), the head's own training loss, and for classification heads the accuracy (the target
mapped to its bin as in training, `action_to_bin`) and the confusion matrix (rows = true bin,
columns = predicted bin), kept as float64 sums so a large split does not lose precision. Every
categorical head (action bins or ``kind: class`` labels) also gets the torchmetrics report of
`drivelab.evaluate.classification`: macro/per-class F1, top-k accuracy, the normalised confusion
matrix, the class balance, optionally after merging classes with a group map.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drivelab.data.batch_loader import make_loader
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.data.records import SPLITS
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.evaluate.classification import (
    DEFAULT_TOP_K,
    ClassificationReport,
    ClassificationScoring,
    render_classification,
)
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.models.objectives import HeadObjective, Objective
from drivelab.processor.fit import DataSpec, PolicyNeeds, check_fit
from drivelab.runs.dataset_path import run_dataset
from drivelab.runs.folder import resolve_checkpoint

__all__ = [
    "OfflineError",
    "OfflineJob",
    "OfflineReport",
    "OutputMetrics",
    "offline_metrics",
    "render_offline",
]

#: Sequential reading touches each episode once; a small cache is enough and keeps workers lean.
CACHE_BYTES = 512 << 20


class OfflineError(DrivelabError):
    """A split or dataset the run cannot be scored on."""


@dataclass
class OutputMetrics:
    """The scores of one output (head) over a split."""

    output: str
    kind: str  # regression | classification
    loss_name: str  # the head's training loss: mse, l1, huber or ce
    samples: int
    loss: float
    mse: float
    mae: float
    accuracy: float | None = None
    bins: list[float] | None = None
    confusion: list[list[int]] | None = None  # [true bin][predicted bin]

    def charles_names(self) -> dict[str, float]:
        """The Keras-style flat names Charles's logs and tables used."""
        out = {f"{self.output}_loss": self.loss}
        if self.kind != "class":  # errors of class ids mean nothing
            out[f"{self.output}_mean_absolute_error"] = self.mae
            out[f"{self.output}_mean_squared_error"] = self.mse
        if self.accuracy is not None:
            out[f"{self.output}_accuracy"] = self.accuracy
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "loss_name": self.loss_name,
            "samples": self.samples,
            "loss": self.loss,
            "mse": self.mse,
            "mae": self.mae,
        }
        if self.kind == "class":
            del out["mse"], out["mae"]
            out.update(accuracy=self.accuracy)
        if self.kind == "classification":
            out.update(accuracy=self.accuracy, bins=self.bins, confusion=self.confusion)
        return out


@dataclass
class OfflineReport:
    """Offline metrics of one run on one split of one dataset."""

    run: str
    dataset: str
    split: str
    samples: int
    loss: float  # the weighted total, as the trainer's val/loss
    outputs: dict[str, OutputMetrics]
    extra: dict[str, float] = field(default_factory=dict)  # aux/<output>_loss of a history branch
    seconds: float = 0.0
    #: Categorical heads: torchmetrics accuracy, F1, top-k, confusion, per-class report.
    classification: dict[str, ClassificationReport] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat Charles-style names: ``loss``, ``<output>_loss``, ``<output>_mean_absolute_error``."""
        out = {"loss": self.loss}
        for metrics in self.outputs.values():
            out.update(metrics.charles_names())
        for output, report in self.classification.items():
            out[f"{output}_macro_f1"] = report.macro_f1
            out[f"{output}_top_{report.top_k}_accuracy"] = report.top_k_accuracy
        out.update(self.extra)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "dataset": self.dataset,
            "split": self.split,
            "samples": self.samples,
            "metrics": self.metrics(),
            "outputs": {name: m.to_dict() for name, m in self.outputs.items()},
            "classification": {name: r.to_dict() for name, r in self.classification.items()},
            "seconds": round(self.seconds, 2),
        }


def _check_split(store: DatasetStore, split: str) -> None:
    if split not in SPLITS:
        raise OfflineError(f"--offline {split!r}: a split is one of {', '.join(SPLITS)}")
    if not store.split_episodes(split):
        present = [s for s in SPLITS if store.split_episodes(s)]
        raise OfflineError(
            f"{store.path} has no {split!r} episodes (it has: {', '.join(present) or 'none'}); "
            f"pick one of those or collect with --{split}-episodes K"
        )


class _Accumulator:
    """Running sums for one head; float64 so millions of samples add up exactly enough."""

    def __init__(self) -> None:
        self.count = 0
        self.loss = 0.0
        self.squared = 0.0
        self.absolute = 0.0


class OfflineJob:
    """A run and a split, checked and opened: `run` scores every sample once.

    Split from `run` so the command line can size its progress bar (and fail in one line on a
    bad split or dataset) before any batch is read.
    """

    def __init__(
        self,
        ref: str,
        split: str,
        dataset: str | Path | None = None,
        runs_root: str | Path = "runs",
        batch_size: int | None = None,
        workers: int = 0,
        device: str | None = None,
        top_k: int = DEFAULT_TOP_K,
        group_map: str | Path | None = None,
    ) -> None:
        self.runtime = PolicyRuntime.from_ref(ref, runs_root)
        config = self.runtime.config
        if dataset is None:  # the run's own, found from any working directory
            dataset = run_dataset(resolve_checkpoint(ref, Path(runs_root))[0], config.data.path)
        self.store = DatasetStore.open(dataset)
        check_fit(DataSpec.of_dataset(self.store), PolicyNeeds.of_processor(self.runtime.processor),
                  who=self.runtime.label, error=OfflineError)
        _check_split(self.store, split)
        if workers < 0:
            raise OfflineError(f"--workers must be 0 or more for --offline (got {workers})")
        size = int(batch_size or config.train.batch_size)
        if size < 1:
            raise OfflineError(f"the batch size must be at least 1 (got {size})")
        history = config.model.history
        processor = self.runtime.processor
        self.split = split
        self.workers = workers
        self.samples = EpisodeFrameDataset(
            self.store,
            split,
            outputs=processor.targets.outputs,
            frames=processor.frames.stack,
            history_signals=processor.history.signals,
            history_length=processor.history.length,
            delta_outputs=list(processor.targets.delta),
            cache_bytes=CACHE_BYTES,
        )
        n = len(self.samples)
        self.batches = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
        if self.runtime.kind.stateful:
            # One whole episode per batch: a recurrent policy reads a 4-D batch as one sequence
            # from a zero state, which is the episode driven step by step with carried state.
            self.batches, start = [], 0
            for episode in self.samples.episodes:
                self.batches.append(list(range(start, start + episode.length)))
                start += episode.length
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.objective = Objective(config.model.heads, history.aux_weight if history else 0.0,
                                   speed_weight=config.model.speed_head.weight if config.model.speed_head else None)
        self.scoring = ClassificationScoring(
            config.model.heads, self.store, split, config.data.train_split, top_k, group_map
        )

    def run(self, on_progress: Callable[[int, int, int], None] | None = None) -> OfflineReport:
        """Score every sample of the split; ``on_progress(samples, batches done, batches)``."""
        started = time.perf_counter()
        policy = self.runtime.policy.to(self.device).eval()
        pipeline = self.runtime.pipeline
        heads = {h.output: h for h in self.objective.heads}
        sums = {o: _Accumulator() for o in heads}
        totals: dict[str, float] = {}
        loader = make_loader(self.samples, self.batches, self.workers,
                             pin_memory=self.device.type == "cuda", seed=0)
        with torch.inference_mode():
            for done, raw in enumerate(loader, start=1):
                batch = {k: v.to(self.device, non_blocking=True) for k, v in raw.items()}
                predictions = policy(*pipeline(batch))
                per_sample = self.objective.per_sample(predictions, batch)
                for name, values in per_sample.items():
                    if name == "loss" or name.startswith("aux/"):
                        totals[name] = totals.get(name, 0.0) + values.double().sum().item()
                for output, head in heads.items():
                    _accumulate(sums[output], head, predictions[output],
                                batch[f"target/{output}"], per_sample[f"{output}_loss"])
                self.scoring.add(predictions, batch, self.objective.heads)
                if on_progress is not None:
                    on_progress(len(self.batches[done - 1]), done, len(self.batches))
        count = len(self.samples)
        classification = self.scoring.finish()
        outputs = {o: _finish(o, heads[o], sums[o], classification.get(o)) for o in heads}
        return OfflineReport(
            run=self.runtime.label,
            dataset=str(self.store.path),
            split=self.split,
            samples=count,
            loss=totals["loss"] / count,
            outputs=outputs,
            extra={k: v / count for k, v in totals.items() if k != "loss"},
            seconds=time.perf_counter() - started,
            classification=classification,
        )


def offline_metrics(
    ref: str,
    split: str,
    dataset: str | Path | None = None,
    runs_root: str | Path = "runs",
    batch_size: int | None = None,
    workers: int = 0,
    device: str | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> OfflineReport:
    """Score ``<run>[@batch]`` on ``split`` of its own dataset (or of ``dataset``).

    ``batch_size`` defaults to the run's ``train.batch_size``; ``workers`` are DataLoader
    processes (0 reads in this process); ``device`` defaults to CUDA when present.
    """
    job = OfflineJob(ref, split, dataset, runs_root, batch_size, workers, device)
    return job.run(on_progress)


def _accumulate(
    acc: _Accumulator,
    head: HeadObjective,
    prediction: torch.Tensor,
    target: torch.Tensor,
    loss: torch.Tensor,
) -> None:
    action = target.reshape(target.shape[0], -1)[:, 0].double()
    error = head.action(prediction).double() - action
    acc.count += int(action.shape[0])
    acc.loss += loss.double().sum().item()
    acc.squared += error.square().sum().item()
    acc.absolute += error.abs().sum().item()


def _finish(output: str, head: HeadObjective, acc: _Accumulator,
            categorical: ClassificationReport | None) -> OutputMetrics:
    """The head's sums as means; a categorical head's accuracy and confusion are the torchmetrics
    report's (`drivelab.evaluate.classification`), the one scorer of every class head."""
    n = max(acc.count, 1)
    metrics = OutputMetrics(
        output=output,
        kind=head.kind,
        loss_name=head.loss,
        samples=acc.count,
        loss=acc.loss / n,
        mse=acc.squared / n,
        mae=acc.absolute / n,
    )
    if categorical is not None:
        metrics.accuracy = categorical.accuracy
        metrics.bins = list(head.bin_values)
        metrics.confusion = [list(map(int, row)) for row in categorical.confusion]
    return metrics


def render_offline(console: Console, report: OfflineReport) -> None:
    """One row per output, then a confusion matrix per classification head."""
    table = Table(
        title=escape(f"{report.run} on {report.split} of {report.dataset}: {report.samples} samples "
                     f"(loss {report.loss:.4g})")
    )
    for col in ("output", "kind", "loss", "MSE", "MAE", "accuracy"):
        table.add_column(col, justify="right" if col not in ("output", "kind") else "left")
    for m in report.outputs.values():
        table.add_row(
            escape(m.output),
            m.kind,
            f"{m.loss:.4g} ({m.loss_name})",
            "-" if m.kind == "class" else f"{m.mse:.4g}",
            "-" if m.kind == "class" else f"{m.mae:.4g}",
            "-" if m.accuracy is None else f"{m.accuracy:.1%}",
        )
    console.print(table)
    for m in report.outputs.values():
        if m.confusion is None or m.bins is None or m.kind == "class":
            continue  # a class head's confusion is in its classification report (and PNG)
        matrix = Table(title=escape(f"{m.output} confusion: rows true bin, columns predicted bin"))
        matrix.add_column("true \\ pred", justify="right")
        for value in m.bins:
            matrix.add_column(f"{value:g}", justify="right")
        matrix.add_column("recall", justify="right")
        for value, row in zip(m.bins, m.confusion, strict=True):
            total = sum(row)
            hit = row[m.bins.index(value)]
            recall = "-" if total == 0 else f"{hit / total:.0%}"
            matrix.add_row(f"{value:g}", *(str(c) for c in row), recall)
        console.print(matrix)
    if report.extra:
        console.print("  ".join(f"{k} {v:.4g}" for k, v in report.extra.items()))
    for classes in report.classification.values():
        render_classification(console, classes)
