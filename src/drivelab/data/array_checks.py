"""What is wrong with an episode's arrays, read from their small ``zarr.json`` files alone.

The loader refuses a missing, truncated or wrong-shaped array when it opens a split (and
`data verify` reports one) instead of failing with an `IndexError` or `KeyError` in the middle
of training; no chunk is decompressed, so checking a whole dataset stays cheap.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drivelab.data.records import EPISODES, ArraySpec, EpisodeInfo, expected_arrays
from drivelab.data.store import DatasetStore, group_attrs


def array_problems(
    store: DatasetStore, info: EpisodeInfo, specs: Sequence[ArraySpec] | None = None
) -> list[tuple[str, str]]:
    """What is wrong with the metadata of an episode's arrays (all, or ``specs``): cheap.

    Reads only the small ``zarr.json`` files (the arrays' and their parent groups'). Each
    problem is ``(key, text)``: the array (or parent group) it concerns, and a text reading
    ``<array>: <what is wrong>``.
    """
    specs = expected_arrays(store.meta) if specs is None else specs
    root = store.path / EPISODES / info.name
    problems: list[tuple[str, str]] = []
    groups_checked: dict[str, str | None] = {}
    for spec in specs:
        parent = spec.key.rpartition("/")[0]
        if parent and parent not in groups_checked:
            _, why = group_attrs(root / parent)
            groups_checked[parent] = why
            if why is not None:
                problems.append((parent, f"group {parent}: {why}"))
        if parent and groups_checked[parent] is not None:
            continue
        problem = _array_problem(root / spec.key, spec, info)
        if problem is not None:
            problems.append((spec.key, problem))
    return problems


def _array_problem(array_dir: Path, spec: ArraySpec, info: EpisodeInfo) -> str | None:
    """What is wrong with one array's metadata (and chunk files), or None."""
    try:
        raw = json.loads((array_dir / "zarr.json").read_text())
    except FileNotFoundError:
        return f"{spec.key}: array is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{spec.key}: its zarr.json is unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(raw, dict) or raw.get("node_type") != "array":
        return f"{spec.key}: {spec.key}/zarr.json is not a Zarr array's metadata"
    shape = raw.get("shape")
    want = [info.length, *spec.trailing]
    dtype = raw.get("data_type")
    if shape != want or dtype != spec.dtype:
        return f"{spec.key} is {dtype}{shape}, expected {spec.dtype}{want}"
    # Episodes written with every chunk (and frames always: a chunk of all-black frames
    # is never left out in practice) must have every chunk file.
    if info.attrs.get("chunks_complete") is True or spec.key == "frames":
        missing = _missing_chunk(array_dir, raw)
        if missing is not None:
            return f"{spec.key}: {missing}"
    return None


def _missing_chunk(array_dir: Path, meta: dict[str, Any]) -> str | None:
    """The first chunk file of a regular-grid array that is absent (it would read as zeros)."""
    try:
        shape = [int(n) for n in meta["shape"]]
        chunks = [int(n) for n in meta["chunk_grid"]["configuration"]["chunk_shape"]]
        encoding = meta.get("chunk_key_encoding", {})
        separator = encoding.get("configuration", {}).get("separator", "/")
    except (KeyError, TypeError, ValueError):
        return None  # not a layout this store writes: leave it to zarr
    if meta["chunk_grid"].get("name") != "regular" or encoding.get("name") != "default":
        return None
    counts = [-(-n // c) for n, c in zip(shape, chunks, strict=True)]
    if not shape or any(n == 0 for n in counts):
        return None
    for position in itertools.product(*(range(n) for n in counts)):
        key = "c" + separator + separator.join(map(str, position))
        if not (array_dir / key).is_file():
            first = position[0] * chunks[0]
            last = min(first + chunks[0], shape[0]) - 1
            return f"chunk file {key} is missing (steps {first}..{last} would read as zeros)"
    return None
