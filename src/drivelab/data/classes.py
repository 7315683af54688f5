"""Class labels in a dataset store: how many classes, their names, counts, and class groups.

A classification dataset (`drivelab.data.importers`) keeps one integer label per frame in
``actions/<output>`` (float32, exact for ids below 2**24) and records ``num_classes`` and
``class_names`` in the store attrs. Training, offline evaluation and the imbalance report all
need the same facts, checked the same way (`drivelab.processor.completion.count_labels`): every
label an integer in ``0 .. C-1``. A label outside the class count would otherwise be clamped
into the last bin by the loss's bucketing, silently, so training refuses it before a run folder
exists (its class counts: `drivelab.processor.completion`).

Class groups (`load_group_map`) merge classes before scoring: the GTSRB log proposes grouping
rare, similar signs (e.g. all speed limits) so the class distribution is less uneven.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivelab.data.store import DatasetStore
from drivelab.processor.completion import LabelError, count_labels

__all__ = [
    "ClassGroups",
    "LabelError",
    "class_names",
    "group_classes",
    "label_counts",
    "load_group_map",
]


def class_names(store: DatasetStore, count: int) -> list[str]:
    """The store's class names when it records ``count`` of them, else ``class N``."""
    names = store.attrs.get("class_names")
    if isinstance(names, list) and len(names) == count:
        return [str(n) for n in names]
    return [f"class {i}" for i in range(count)]


def label_counts(store: DatasetStore, output: str, split: str, classes: int) -> np.ndarray:
    """Frames per class [C] in one split, refusing non-integer labels and labels >= ``classes``."""
    episodes = [(info.index, store.read_array(info.index, f"actions/{output}"))
                for info in store.split_episodes(split)]
    return count_labels(str(store.path), output, episodes, classes)


# ------------------------------------------------------------------------- class groups
@dataclass(frozen=True)
class ClassGroups:
    """A merge of C original classes into G groups: ``index[c]`` is class c's group."""

    names: list[str]  # the G group names, in order of their first member
    index: list[int]  # [C] original class -> group

    @property
    def count(self) -> int:
        return len(self.names)

    def describe(self) -> dict[str, list[int]]:
        """Group name -> original class ids (what a report records)."""
        members: dict[str, list[int]] = {name: [] for name in self.names}
        for original, group in enumerate(self.index):
            members[self.names[group]].append(original)
        return members


def group_classes(groups: Mapping[str, Sequence[int | str]], names: Sequence[str]) -> ClassGroups:
    """Merge the listed classes (ids or names) into named groups; unlisted classes stay alone.

    Groups are numbered in the order of their lowest member, so the merged classes keep the
    original order where they can.
    """
    lookup = {name: i for i, name in enumerate(names)}
    owner: dict[int, str] = {}
    for group, members in groups.items():
        if not isinstance(members, list | tuple) or not members:
            raise LabelError(f"class group {group!r}: expected a non-empty list of class ids or names")
        for member in members:
            if isinstance(member, bool):
                member = str(member)
            if isinstance(member, int):
                cls = member
            elif isinstance(member, str) and member in lookup:
                cls = lookup[member]
            elif isinstance(member, str) and member.isdigit():
                cls = int(member)
            else:
                raise LabelError(f"class group {group!r}: {member!r} is not a class id or name")
            if not 0 <= cls < len(names):
                raise LabelError(
                    f"class group {group!r}: class {cls} is outside the {len(names)} classes"
                )
            if cls in owner and owner[cls] != group:
                raise LabelError(f"class {cls} ({names[cls]}) is in both {owner[cls]!r} and {group!r}")
            owner[cls] = group
    out_names: list[str] = []
    position: dict[str, int] = {}
    index: list[int] = []
    for cls, name in enumerate(names):
        key = owner.get(cls, name)
        if cls not in owner and key in groups:  # an ungrouped class named like a group
            key = f"{name} ({cls})"
        if key not in position:
            position[key] = len(out_names)
            out_names.append(key)
        index.append(position[key])
    return ClassGroups(out_names, index)


def load_group_map(path: str | Path, names: Sequence[str]) -> ClassGroups:
    """Read ``{"group name": [class ids or names], ...}`` from a JSON file and resolve it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise LabelError(f"--group-map {path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise LabelError(f"--group-map {path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not data:
        raise LabelError(f'--group-map {path}: expected an object {{"group": [ids or names], ...}}')
    try:
        return group_classes(data, names)
    except LabelError as exc:
        raise LabelError(f"--group-map {path}: {exc}") from None
