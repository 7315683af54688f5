"""`drivelab data edit`: a new dataset made from an existing one; the source is never written.

The plan (`drivelab.data.edit_ops`) is made and checked first; then every piece is read from its
source and committed into the new dataset through `drivelab.data.dataset_out`, the one path every
importer writes by, so the statistics are recomputed per episode by `write_episode` as at any
commit. A copy, not a view onto the source's chunks: measured in docs/data_view_edit.md.

Crash safety. The new dataset is filled under a hidden sibling name (``.NEW.edit-<8 hex>``)
whose root attrs say ``edit_state: writing`` (`DatasetStore.open` refuses such a store), and it
is renamed to ``NEW`` only once complete: a kill -9 at any moment leaves ``NEW`` absent and at
most that hidden folder, which no reader accepts and which the next edit to ``NEW`` removes
(only when no process holds its writer lock, i.e. its writer is dead). Any exception, Ctrl-C and a
full disk included, removes it at once (`dataset_out`).

Provenance. The new root attrs carry ``edits``: the source's own list plus one entry saying
what was done, when, and from which sources (path, sha256 of their files, episodes, frames);
each episode carries ``edit_from`` (source number, episode index, frame range). The source's
sha256 is taken before and after the copy: a source changed meanwhile (a ``collect --append``
running beside) fails the edit, nothing written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.data import edit_ops
from drivelab.data.dataset_out import Progress, check_new_dataset, dataset_out
from drivelab.data.edit_ops import EditError, Piece
from drivelab.data.locks import writer_active
from drivelab.data.records import (
    EPISODES,
    LOCK_FILE,
    STAGING,
    EpisodeInfo,
    EpisodeRecord,
    episode_name,
)
from drivelab.data.store import DatasetStore
from drivelab.errors import Interrupted

#: Root attrs that describe one dataset's own layout or history; everything else is carried over.
OWN_ROOT_ATTRS = ("format", "version", "env_id", "fps", "frame_shape", "telemetry", "actions", "chunk_frames",
                  "splits", "episodes", "edits", "edit_state")
#: Episode attrs `write_episode` writes itself.
OWN_EPISODE_ATTRS = ("index", "length", "moments", "committed", "chunks_complete")
WRITING = "writing"


@dataclass
class EditSummary:
    out: Path
    operation: str
    episodes: int
    frames: int
    splits: dict[str, int]
    sources: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def dataset_checksum(path: Path) -> str:
    """sha256 over every file of a dataset (relative name and bytes), lock file and staging aside."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not (Path(root) == path and d == STAGING))
        for name in sorted(files):
            if Path(root) == path and name == LOCK_FILE:
                continue
            file = Path(root, name)
            digest.update(str(file.relative_to(path)).encode() + b"\0")
            with open(file, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
    return "sha256:" + digest.hexdigest()


def staging_path(out: Path) -> Path:
    return out.parent / f".{out.name}.edit-{uuid.uuid4().hex[:8]}"


def remove_stale_staging(out: Path) -> list[Path]:
    """Hidden ``.NEW.edit-*`` folders a killed edit left (their writer lock is free): removed."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for folder in sorted(out.parent.glob(f".{out.name}.edit-*")):
        if folder.is_dir() and not folder.is_symlink() and not writer_active(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def open_sources(source: Path, others: Sequence[Path]) -> list[DatasetStore]:
    """The source (and datasets to merge), each opened and not being written."""
    seen: set[Path] = set()
    stores = []
    for path in (source, *others):
        if Path(path).resolve() in seen:
            raise EditError(f"merge: {path} is named twice: each dataset is merged once")
        seen.add(Path(path).resolve())
        store = DatasetStore.open(path)
        if store.writer_active():
            raise EditError(f"{path} is being written (a collect or import holds its lock): edit it once that "
                            "has finished (nothing was written)")
        if store.damaged():
            raise EditError(f"{path} has damaged episode groups: run `drivelab data verify {path}` first")
        stores.append(store)
    return stores


def plan(stores: Sequence[DatasetStore], operation: str, args: Sequence[str]) -> list[Piece]:
    """The pieces of the new dataset; every refusal happens here, before anything is written."""
    store = stores[0]
    if operation != "merge" and len(stores) > 1:
        raise EditError(f"{operation} edits one dataset; only merge takes others")
    if operation == "drop":
        pieces = edit_ops.plan_drop(store, args)
    elif operation == "trim":
        pieces = edit_ops.plan_trim(store, args)
    elif operation == "split":
        pieces = edit_ops.plan_split(store, args)
    elif operation == "filter":
        pieces = edit_ops.plan_filter(store, args)
    elif operation == "merge":
        if len(stores) < 2:
            raise EditError("merge needs at least one other dataset: `merge OTHER [OTHER...]`")
        pieces = edit_ops.plan_merge(stores)
    else:
        raise EditError(f"unknown edit {operation!r}: use one of {', '.join(edit_ops.OPERATIONS)}")
    edit_ops.check_splits(pieces)
    return pieces


def check_finite(stores: Sequence[DatasetStore], pieces: Sequence[Piece]) -> None:
    """Refuse up front a piece holding NaN/Inf (no commit would take it), naming the way out."""
    bad = []
    for piece in pieces:
        store = stores[piece.source]
        for key in [f"telemetry/{s.name}" for s in store.meta.telemetry] + [f"actions/{s.name}" for s in store.meta.actions]:
            if not np.all(np.isfinite(store.read_array(piece.episode, key)[piece.start:piece.stop])):
                bad.append(f"{store.path} episode {piece.episode} ({key})")
                break
    if bad:
        raise EditError(f"NaN/Inf values in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}: no dataset can hold "
                        "them; drop those episodes (or trim the bad frames away) in this edit")


def piece_attrs(info: EpisodeInfo, piece: Piece) -> dict[str, Any]:
    """The source episode's attrs, per-frame ones (a string or list as long as the episode) cut to the
    piece, plus ``edit_from``; `write_episode` adds its own, a chunk copy keeps the source's."""
    whole = piece.start == 0 and piece.stop == info.length
    attrs: dict[str, Any] = {}
    for key, value in info.attrs.items():
        if key in OWN_EPISODE_ATTRS and not (whole and key in ("length", "moments", "chunks_complete")):
            continue
        per_frame = isinstance(value, str | list) and len(value) == info.length and info.length > 1
        attrs[key] = value[piece.start:piece.stop] if per_frame else value
    attrs["edit_from"] = {"source": piece.source, "episode": piece.episode, "start": piece.start, "stop": piece.stop}
    return attrs


def read_piece(store: DatasetStore, info: EpisodeInfo, piece: Piece) -> EpisodeRecord:
    """A piece's arrays, decoded, and its attrs: what `write_episode` commits (and re-measures)."""
    cut = slice(piece.start, piece.stop)

    def read(key: str) -> np.ndarray:
        return np.asarray(store.read_array(piece.episode, key)[cut])

    attrs = {k: v for k, v in piece_attrs(info, piece).items() if k not in OWN_EPISODE_ATTRS}
    return EpisodeRecord(
        frames=read("frames"),
        telemetry={s.name: read(f"telemetry/{s.name}") for s in store.meta.telemetry},
        actions={s.name: read(f"actions/{s.name}") for s in store.meta.actions},
        reward=read("reward"),
        perturbed=read("perturbed"),
        info=attrs,
    )


def edit_dataset(
    source: Path,
    out: Path,
    operation: str,
    args: Sequence[str] = (),
    on_progress: Progress | None = None,
    copy_chunks: bool = True,
) -> EditSummary:
    """Make ``out`` from ``source`` by ``operation args``; for merge, ``args`` are the other datasets.

    Episodes kept whole are copied chunk file by chunk file (``copy_chunks``; False re-encodes them
    too, the benchmark's comparison); trimmed and filtered pieces are decoded and committed anew."""
    import time

    started = time.perf_counter()
    source, out = Path(source), Path(out)
    check_new_dataset(out, EditError)
    others = [Path(a) for a in args] if operation == "merge" else []
    stores = open_sources(source, others)
    pieces = plan(stores, operation, [] if operation == "merge" else args)
    check_finite(stores, pieces)
    if any(out.resolve() == s.path.resolve() for s in stores):
        raise EditError(f"--out {out} is a source of the edit: choose a new path")
    sums = [dataset_checksum(s.path) for s in stores]
    remove_stale_staging(out)
    staging = staging_path(out)
    entry = {
        "operation": operation,
        "args": [str(a) for a in args],
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sources": [{"path": str(s.path.resolve()), "checksum": c, "episodes": len(s.episodes()),
                     "frames": sum(e.length for e in s.episodes())} for s, c in zip(stores, sums, strict=True)],
    }
    listings = [{e.index: e for e in s.episodes()} for s in stores]  # scanned once, not per piece
    carried = {k: v for k, v in stores[0].attrs.items() if k not in OWN_ROOT_ATTRS}
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    try:
        with dataset_out(staging, stores[0].meta, EditError, on_progress, len(pieces)) as ds:
            ds.store.update_attrs(edit_state=WRITING, **carried)
            for piece in pieces:
                store, info = stores[piece.source], listings[piece.source][piece.episode]
                if copy_chunks and piece.start == 0 and piece.stop == info.length:
                    index = ds.add_copy(store.path / EPISODES / episode_name(piece.episode), piece_attrs(info, piece))
                else:
                    index = ds.add(read_piece(store, info, piece))
                splits[piece.split].append(index)
            if [dataset_checksum(s.path) for s in stores] != sums:
                raise EditError("a source changed while it was being copied (a collect --append beside?): nothing "
                                "was written; run the edit again once it has finished")
            entry.update(episodes=ds.episodes, frames=ds.frames)
            ds.store.assign_splits(splits["val"], splits["test"])
            ds.store.update_attrs(edits=[*stores[0].attrs.get("edits", []), entry], edit_state="done")
            if out.exists() or out.is_symlink():
                raise EditError(f"{out} appeared while the edit ran: nothing was overwritten (the copy was removed)")
            os.rename(staging, out)  # the new dataset appears whole, under its name, or not at all
    except Interrupted:
        raise Interrupted(f"the edit into {out} was stopped; nothing was written (the partial copy was removed): "
                          "run it again") from None
    except EditError as exc:  # dataset_out names the hidden copy; the user knows --out
        raise EditError(str(exc).replace(str(staging), str(out))) from None
    return EditSummary(out=out, operation=operation, episodes=entry["episodes"], frames=entry["frames"],
                       splits={k: len(v) for k, v in splits.items()}, sources=entry["sources"],
                       seconds=time.perf_counter() - started)


def describe_edits(attrs: dict[str, Any]) -> list[str]:
    """One line per recorded edit, oldest first: what `data info` prints."""
    lines = []
    for e in attrs.get("edits", []) or []:
        sources = ", ".join(f"{s.get('path')} ({str(s.get('checksum', ''))[:19]})" for s in e.get("sources", []))
        lines.append(f"{e.get('at', '?')}: {e.get('operation')} {' '.join(e.get('args', []))} from {sources} -> "
                     f"{e.get('episodes')} episodes, {e.get('frames')} frames")
    return lines


__all__ = ["EditError", "EditSummary", "dataset_checksum", "describe_edits", "edit_dataset"]
