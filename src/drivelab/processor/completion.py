"""A config completed for its dataset: one pure function of (config, `DatasetFacts`).

What the dataset decides is written into the config before training, so ``config.yaml`` alone
rebuilds the policy (the runtime and offline evaluation never open the dataset): each history
signal's size, each ``kind: class`` head's class count. On the way everything that can be wrong
between config and dataset is refused in one line (`check_fit` runs here, once), and the
processor state the policy trains with comes from the same facts. Nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from drivelab.config import ExperimentConfig
from drivelab.errors import DrivelabError
from drivelab.processor.facts import DatasetFacts, EpisodeLabels
from drivelab.processor.fit import PolicyNeeds, check_fit
from drivelab.processor.state import ProcessorState
from drivelab.processor.statistics import training_statistics


class InputError(DrivelabError):
    """The config asks for data the dataset cannot provide."""


class LabelError(DrivelabError):
    """Labels that do not fit the class count, or a class-group map that does not fit the classes."""


def complete(config: ExperimentConfig, facts: DatasetFacts) -> tuple[ExperimentConfig, ProcessorState]:
    """The config with the dataset's sizes and class counts, and the processor state to train with.

    Checked in this order: the splits to train (and validate) on, the fit of outputs, delta
    heads, frames and history (`check_fit`), then the class labels.
    """
    data = config.data
    if not facts.episodes.get(data.train_split):
        raise InputError(
            f"{data.path} has no {data.train_split!r} episodes to train on: collect more episodes"
        )
    if data.val_split is not None and not facts.episodes.get(data.val_split):
        raise InputError(
            f"{data.path} has no {data.val_split!r} episodes to validate on: collect with "
            f"--val-episodes K, or set data.val_split=null to train without validation"
        )
    config = complete_config(config, facts)
    sizes = dict(config.model.history.signal_sizes) if config.model.history else {}
    statistics = training_statistics(config, facts.moments, facts.source)
    return config, ProcessorState.from_config(config, facts.frame_shape, sizes, statistics)


def complete_config(config: ExperimentConfig, facts: DatasetFacts) -> ExperimentConfig:
    """The config with every history signal's size and every class head's count written out."""
    sizes = check_fit(facts.spec, PolicyNeeds.of_config(config), who="the config", error=InputError)
    return with_history_sizes(with_dataset_classes(config, facts), sizes)


def with_history_sizes(config: ExperimentConfig, sizes: Mapping[str, int]) -> ExperimentConfig:
    """The config with every history signal's size written out, so config.yaml is complete."""
    if config.model.history is None or not sizes:
        return config
    history = config.model.history.model_copy(update={"signal_sizes": dict(sizes)})
    model = config.model.model_copy(update={"history": history})
    return config.model_copy(update={"model": model})


def with_dataset_classes(config: ExperimentConfig, facts: DatasetFacts) -> ExperimentConfig:
    """The config with every ``kind: class`` head's class count filled in and its labels checked.

    The count is written into the run's config.yaml, so the runtime and offline evaluation
    build the same head without opening the dataset.
    """
    heads = list(config.model.heads)
    if not any(h.kind == "class" for h in heads):
        return config
    splits = [config.data.train_split] + ([config.data.val_split] if config.data.val_split else [])
    for index, head in enumerate(heads):
        if head.kind != "class":
            continue
        labels = facts.class_labels.get(head.output, {})
        count = resolve_class_count(facts, head.output, head.classes, f"model.heads.{index}.classes")
        for split in splits:
            count_labels(facts.source, head.output, labels.get(split, []), count)
        heads[index] = head.model_copy(update={"classes": count})
    model = config.model.model_copy(update={"heads": heads})
    return config.model_copy(update={"model": model})


def resolve_class_count(facts: DatasetFacts, output: str, configured: int | None, where: str) -> int:
    """The class count of a head: the dataset's ``num_classes``, which a configured count must equal.

    A store without ``num_classes`` (not written by an importer) gets its count from the config,
    or from the largest label + 1 over all splits.
    """
    recorded = facts.attrs.get("num_classes")
    if recorded is not None:
        recorded = int(recorded)
        if configured is not None and configured != recorded:
            raise LabelError(
                f"{where}: {configured} classes, but {facts.source} has {recorded} "
                f"(labels 0..{recorded - 1}); drop classes or set it to {recorded}"
            )
        return recorded
    if configured is not None:
        return configured
    largest = -1.0
    for episodes in facts.class_labels.get(output, {}).values():
        for _, labels in episodes:
            if labels.size:
                largest = max(largest, float(labels.max()))
    if largest < 1:
        raise LabelError(
            f"{where}: {facts.source} records no num_classes and its labels of {output!r} name "
            "fewer than 2 classes; set classes"
        )
    return int(largest) + 1


def count_labels(source: str, output: str, episodes: Sequence[EpisodeLabels], classes: int) -> np.ndarray:
    """Frames per class [C] over episodes' labels, refusing non-integer labels and labels >= ``classes``.

    A label outside the class count would otherwise be clamped into the last bin by the loss's
    bucketing, silently.
    """
    counts = np.zeros(classes, np.int64)
    for index, raw in episodes:
        labels = raw.astype(np.float64).reshape(-1)
        if labels.size == 0:
            continue
        ids = np.rint(labels)
        bad = np.flatnonzero((ids != labels) | (ids < 0) | (ids >= classes))
        if bad.size:
            value = labels[bad[0]]
            raise LabelError(
                f"{source} episode {index} frame {int(bad[0])}: label {value:g} of "
                f"{output!r} is outside the {classes} classes (integers 0..{classes - 1}); "
                "re-import the data or set the head's classes"
            )
        counts += np.bincount(ids.astype(np.int64), minlength=classes)
    return counts
