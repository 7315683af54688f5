"""Classification metrics for class heads (GTSRB) and action-bin heads, computed by torchmetrics.

The GTSRB log (seed 003) asks for "accuracy, F1 score, top K accuracy, confusion matrix" as the
team's standard, and for a look at the uneven class sizes with the idea of grouping rare,
similar classes. This module turns one split's logits and targets into exactly that:

- accuracy (micro: correct / samples), macro F1 and per-class F1, top-k accuracy (k = 5 by
  default, capped at the class count), a per-class report (precision, recall, F1, support);
- the confusion matrix, as counts and normalised over each true class (rows sum to 1), and as a
  PNG with the class names;
- a class-imbalance report (frames per class, the largest/smallest ratio, the rare classes);
- optionally a class-group map (`drivelab.data.classes.ClassGroups`): probabilities are summed
  within a group and labels mapped to their group *before* scoring, so every number above is
  the merged problem's.

The metrics are torchmetrics' functional multiclass metrics (not re-derived here); torchmetrics'
macro average leaves out classes that appear neither in the targets nor in the predictions.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drivelab.data.classes import ClassGroups
from drivelab.outputs import atomic_output

__all__ = [
    "DEFAULT_TOP_K",
    "ClassificationCollector",
    "ClassificationReport",
    "ClassificationScoring",
    "classification_report",
    "imbalance_report",
    "merge_groups",
    "render_classification",
    "save_confusion_png",
]

DEFAULT_TOP_K = 5
#: A class with fewer frames than this share of the median class is "rare" in the imbalance report.
RARE_SHARE = 0.25


@dataclass
class ClassificationReport:
    """One head's classification metrics over one split (after the optional class grouping)."""

    output: str
    class_names: list[str]
    samples: int
    accuracy: float
    macro_f1: float
    top_k: int
    top_k_accuracy: float
    per_class: list[dict[str, Any]]  # name, precision, recall, f1, support
    confusion: list[list[int]]  # [true][predicted] counts
    confusion_normalized: list[list[float]]  # rows (true classes) sum to 1; empty rows are 0
    imbalance: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, list[int]] | None = None  # group name -> original class ids

    def to_dict(self) -> dict[str, Any]:
        out = {
            "output": self.output,
            "samples": self.samples,
            "classes": len(self.class_names),
            "class_names": self.class_names,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "top_k": self.top_k,
            f"top_{self.top_k}_accuracy": self.top_k_accuracy,
            "per_class": self.per_class,
            "confusion": self.confusion,
            "confusion_normalized": self.confusion_normalized,
            "imbalance": self.imbalance,
        }
        if self.groups is not None:
            out["groups"] = self.groups
        return out


class ClassificationCollector:
    """Gathers one head's class probabilities and target indices batch by batch (on the CPU)."""

    def __init__(self) -> None:
        self._probabilities: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """``logits`` [B, C], ``targets`` [B] class/bin indices."""
        self._probabilities.append(torch.softmax(logits.detach().float(), dim=1).cpu())
        self._targets.append(targets.detach().long().cpu())

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._targets:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        return torch.cat(self._probabilities), torch.cat(self._targets)


def merge_groups(
    probabilities: torch.Tensor, targets: torch.Tensor, groups: ClassGroups
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum each group's class probabilities and map labels to their group."""
    index = torch.tensor(groups.index, dtype=torch.long)
    if probabilities.shape[1] != len(groups.index):
        raise ValueError(
            f"the group map covers {len(groups.index)} classes, the head has {probabilities.shape[1]}"
        )
    merged = torch.zeros(probabilities.shape[0], groups.count, dtype=probabilities.dtype)
    merged.index_add_(1, index, probabilities)
    return merged, index[targets]


def classification_report(
    output: str,
    probabilities: torch.Tensor,
    targets: torch.Tensor,
    class_names: Sequence[str],
    top_k: int = DEFAULT_TOP_K,
    groups: ClassGroups | None = None,
    train_counts: Sequence[int] | None = None,
) -> ClassificationReport:
    """Score [N, C] class probabilities (or logits) against [N] target indices.

    ``train_counts`` (frames per original class in the training split) adds the training side
    to the imbalance report; with ``groups`` it is merged like everything else.
    """
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    names = list(class_names)
    counts_train = None if train_counts is None else np.asarray(train_counts, np.int64)
    if groups is not None:
        probabilities, targets = merge_groups(probabilities, targets, groups)
        names = list(groups.names)
        if counts_train is not None:
            counts_train = np.bincount(np.asarray(groups.index), weights=counts_train,
                                       minlength=groups.count).astype(np.int64)
    classes = len(names)
    if probabilities.ndim != 2 or probabilities.shape[1] != classes:
        raise ValueError(f"expected [N, {classes}] scores, got {list(probabilities.shape)}")
    n = int(targets.shape[0])
    k = max(1, min(int(top_k), classes))
    args = {"num_classes": classes, "validate_args": False}
    if n == 0:
        raise ValueError("no samples to score")
    accuracy = float(multiclass_accuracy(probabilities, targets, average="micro", **args))
    top = float(multiclass_accuracy(probabilities, targets, average="micro", top_k=k, **args))
    f1_each = multiclass_f1_score(probabilities, targets, average=None, **args)
    macro_f1 = float(multiclass_f1_score(probabilities, targets, average="macro", **args))
    precision = multiclass_precision(probabilities, targets, average=None, **args)
    recall = multiclass_recall(probabilities, targets, average=None, **args)
    confusion = multiclass_confusion_matrix(probabilities, targets, **args)
    with warnings.catch_warnings():  # a class absent from the targets has an all-NaN row: zeros
        warnings.filterwarnings("ignore", message=".*NaN values found in confusion matrix.*")
        normalized = multiclass_confusion_matrix(probabilities, targets, normalize="true", **args)
    support = torch.bincount(targets, minlength=classes)
    per_class = [
        {
            "class": i,
            "name": names[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1_each[i]),
            "support": int(support[i]),
        }
        for i in range(classes)
    ]
    counts = {"scored": support.numpy()}
    if counts_train is not None:
        counts["train"] = counts_train
    return ClassificationReport(
        output=output,
        class_names=names,
        samples=n,
        accuracy=accuracy,
        macro_f1=macro_f1,
        top_k=k,
        top_k_accuracy=top,
        per_class=per_class,
        confusion=confusion.tolist(),
        confusion_normalized=[[round(float(v), 6) for v in row] for row in torch.nan_to_num(normalized)],
        imbalance=imbalance_report(counts, names),
        groups=groups.describe() if groups is not None else None,
    )


def imbalance_report(counts: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, Any]:
    """Per split: frames per class, largest/smallest class ratio, and the rare classes.

    A class is rare below ``RARE_SHARE`` of the median class size: the candidates the GTSRB log
    wanted to group. A class with no frames makes the ratio undefined (None) and is listed.
    """
    out: dict[str, Any] = {}
    for split, values in counts.items():
        values = np.asarray(values, np.int64)
        present = values[values > 0]
        median = float(np.median(values)) if values.size else 0.0
        out[split] = {
            "counts": values.tolist(),
            "total": int(values.sum()),
            "largest": int(values.max()) if values.size else 0,
            "smallest": int(values.min()) if values.size else 0,
            "imbalance_ratio": (float(values.max() / values.min()) if values.size and values.min() > 0
                                else None),
            "empty_classes": [names[i] for i in np.flatnonzero(values == 0)],
            "rare_classes": [names[i] for i in np.flatnonzero((values > 0) & (values < RARE_SHARE * median))],
            "present_classes": int(present.size),
        }
    return out


def save_confusion_png(report: ClassificationReport, path: str | Path, title: str = "", force: bool = False) -> Path:
    """The row-normalised confusion matrix as a PNG with class names (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matrix = np.asarray(report.confusion_normalized, np.float64)
    classes = matrix.shape[0]
    side = min(max(5.0, 0.22 * classes + 2.5), 14.0)
    font = 8 if classes <= 12 else (6 if classes <= 50 else 4)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    labels = [_short(name) for name in report.class_names]
    ax.set_xticks(range(classes), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(classes), labels, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (each row sums to 1)")
    if classes <= 12:
        for i in range(classes):
            for j in range(classes):
                if matrix[i, j] > 0:
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=font,
                            color="white" if matrix[i, j] > 0.5 else "black")
    heading = title or report.output
    ax.set_title(f"{heading}\naccuracy {report.accuracy:.1%}, macro-F1 {report.macro_f1:.3f}, "
                 f"top-{report.top_k} {report.top_k_accuracy:.1%}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with atomic_output(path, force=force, flag="--json") as tmp:
        fig.savefig(tmp, dpi=90 if classes > 12 else 100)
    plt.close(fig)
    return Path(path)


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def render_classification(console: Console, report: ClassificationReport, max_rows: int = 60) -> None:
    """Headline numbers, then the per-class report (worst F1 first) and the imbalance summary."""
    grouped = (f" (merged from {sum(len(m) for m in report.groups.values())} by the group map)"
               if report.groups is not None else "")
    console.print(
        f"[bold]{escape(report.output)}[/]: {report.samples} samples, {len(report.class_names)} classes"
        f"{grouped}  accuracy {report.accuracy:.2%}  macro-F1 {report.macro_f1:.4f}  "
        f"top-{report.top_k} accuracy {report.top_k_accuracy:.2%}"
    )
    table = Table(title=escape(f"{report.output}: per-class report (lowest F1 first)"))
    for col in ("class", "name", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "name" else "right")
    rows = sorted(report.per_class, key=lambda r: (r["f1"], r["class"]))
    for row in rows[:max_rows]:
        table.add_row(str(row["class"]), escape(str(row["name"])), f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                      f"{row['f1']:.3f}", str(row["support"]))
    console.print(table)
    for split, info in report.imbalance.items():
        ratio = "undefined (empty classes)" if info["imbalance_ratio"] is None else f"{info['imbalance_ratio']:.1f}"
        rare = ", ".join(info["rare_classes"][:8]) + (" ..." if len(info["rare_classes"]) > 8 else "")
        console.print(escape(
            f"class balance ({split}): {info['total']} frames, largest {info['largest']}, smallest "
            f"{info['smallest']}, ratio {ratio}" + (f"; rare: {rare}" if rare else "")
            + (f"; empty: {', '.join(info['empty_classes'][:8])}" if info["empty_classes"] else "")
        ))


class ClassificationScoring:
    """Everything offline evaluation needs for a run's categorical heads on one split.

    Class heads (``kind: class``) get the dataset's class names, the training split's class
    counts for the imbalance report and the optional group map; action-bin heads are scored the
    same way with their bin values as class names. Labels are checked against the class count
    before any batch is read.
    """

    def __init__(
        self,
        heads: Sequence[Any],  # HeadConfig of the run
        store: Any,  # DatasetStore being scored
        split: str,
        train_split: str | None,
        top_k: int = DEFAULT_TOP_K,
        group_map: str | Path | None = None,
    ) -> None:
        from drivelab.data.classes import LabelError, class_names, label_counts, load_group_map

        self.top_k = int(top_k)
        if self.top_k < 1:
            raise LabelError(f"--top-k must be at least 1 (got {top_k})")
        self.names: dict[str, list[str]] = {}
        self.train_counts: dict[str, list[int] | None] = {}
        self.groups: dict[str, ClassGroups | None] = {}
        class_heads = [h for h in heads if h.predicts_labels]
        if group_map is not None and not class_heads:
            raise LabelError("--group-map merges the classes of a class head; this run has none")
        for head in heads:
            if head.predicts_labels:
                recorded = store.attrs.get("num_classes")
                if recorded is not None and int(recorded) != head.classes:
                    raise LabelError(
                        f"{store.path} has {recorded} classes, the run's head {head.output!r} "
                        f"predicts {head.classes}: score it on data with the same classes"
                    )
                self.names[head.output] = class_names(store, head.classes)
                label_counts(store, head.output, split, head.classes)  # refuses bad labels
                has_train = train_split is not None and store.split_episodes(train_split)
                self.train_counts[head.output] = (
                    label_counts(store, head.output, train_split, head.classes).tolist()
                    if has_train else None
                )
                self.groups[head.output] = (
                    load_group_map(group_map, self.names[head.output]) if group_map is not None else None
                )
            elif head.predicts_bins:
                self.names[head.output] = [f"{v:g}" for v in head.bin_values()]
                self.train_counts[head.output] = None
                self.groups[head.output] = None
        self.collectors = {output: ClassificationCollector() for output in self.names}

    def add(self, predictions: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
            objectives: Sequence[Any]) -> None:
        """One batch: each categorical head's logits and its targets' class/bin indices."""
        for head in objectives:
            if head.output in self.collectors:
                target = head.target_index(batch[f"target/{head.output}"])
                self.collectors[head.output].add(predictions[head.output], target)

    def finish(self) -> dict[str, ClassificationReport]:
        reports = {}
        for output, collector in self.collectors.items():
            probabilities, targets = collector.tensors()
            reports[output] = classification_report(
                output, probabilities, targets, self.names[output], self.top_k,
                self.groups[output], self.train_counts[output],
            )
        return reports
