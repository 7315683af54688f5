"""Write and commit one episode into a dataset: staging -> rename -> commit marker.

Crash safety lives here (see `drivelab.data.store` for the layout): a worker writes an episode
under ``_staging/<episode>-<8 hex digits>`` (`STAGING_NAME`), renames the finished group into
``episodes/`` (an atomic directory rename) and only then writes the commit marker (``committed:
true`` in the group's attrs, itself replaced atomically by zarr). Readers only ever see groups
carrying the marker, so a killed recorder leaves at worst a leftover that `data verify` reports,
never half an episode; parallel workers each write their own group and never share an array.
Any process may write an episode; only the root attrs need the writer lock.

zarr writes on its own IO thread (an asyncio loop): when the caller is interrupted (Ctrl-C) or one
chunk write fails (a full disk), the other chunk writes of that call keep running after the
exception reaches the caller. Whoever removes what a failed write left must first call
`settle_pending_writes`, or the still-running writes recreate folders it just removed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from drivelab.data.records import (
    EPISODES,
    STAGING,
    DatasetError,
    DatasetMeta,
    EpisodeInfo,
    EpisodeRecord,
    episode_name,
)
from drivelab.data.stats import SignalMoments
from drivelab.data.store import DatasetStore, jsonable


def _codec() -> BloscCodec:
    # lz4 + byte shuffle: decodes several GB/s, so random frame access in the loader stays cheap,
    # while CarRacing frames still shrink several-fold (large flat colour areas).
    return BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle)


def write_episode(store: DatasetStore, index: int, record: EpisodeRecord) -> EpisodeInfo:
    """Write and commit one episode (staging -> rename -> marker). Any process may call it."""
    _check_record(store.meta, record)
    name = episode_name(index)
    staging = store.path / STAGING / f"{name}-{uuid.uuid4().hex[:8]}"
    staging.parent.mkdir(exist_ok=True)
    moments = episode_moments(record)
    attrs = {
        **jsonable(record.info),
        "index": index,
        "length": len(record),
        "moments": {k: m.to_dict() for k, m in moments.items()},
        "committed": False,
        # every chunk is written, even one equal to the fill value, so a chunk file that is
        # missing later is damage (zarr would read it back as zeros without a word)
        "chunks_complete": True,
    }
    group = zarr.open_group(str(staging), mode="w-", zarr_format=3, attributes=attrs)
    t = len(record)
    h, w, c = store.meta.frame_shape
    chunk = max(1, min(store.meta.chunk_frames, t))
    every = {"write_empty_chunks": True}
    group.create_array(
        "frames", data=record.frames, chunks=(chunk, h, w, c), compressors=[_codec()], config=every
    )
    for kind, arrays in (("telemetry", record.telemetry), ("actions", record.actions)):
        sub = group.create_group(kind)
        for key, arr in arrays.items():
            sub.create_array(key, data=np.asarray(arr, np.float32), chunks=(max(t, 1), arr.shape[1]),
                             config=every)
    group.create_array("reward", data=np.asarray(record.reward, np.float32), chunks=(max(t, 1),),
                       config=every)
    group.create_array("perturbed", data=np.asarray(record.perturbed, bool), chunks=(max(t, 1),),
                       config=every)
    final = store.path / EPISODES / name
    try:
        os.rename(staging, final)
    except OSError as exc:
        raise DatasetError(
            f"cannot commit episode {index}: {final} already exists (another recorder?)"
        ) from exc
    # The commit marker, written last: until it lands, readers skip this episode.
    committed = zarr.open_group(str(final), mode="r+", zarr_format=3)
    committed.attrs["committed"] = True
    return EpisodeInfo(index=index, length=len(record), attrs={**attrs, "committed": True})


def copy_episode(store: DatasetStore, index: int, source: Path, attrs: dict[str, Any]) -> EpisodeInfo:
    """Commit a committed episode of another dataset with the same layout, byte for byte.

    For edits that keep an episode whole (`data edit` drop, split, merge): its chunk files are
    copied unchanged (staging -> rename -> marker, as `write_episode`), so nothing is decoded or
    re-encoded, and its moments, taken at its own commit from these very bytes, still hold.
    ``attrs`` replace the copied group's attrs (the caller keeps the source's, adds its own).
    """
    name = episode_name(index)
    staging = store.path / STAGING / f"{name}-{uuid.uuid4().hex[:8]}"
    staging.parent.mkdir(exist_ok=True)
    shutil.copytree(source, staging, symlinks=False)
    length = int(attrs["length"])
    group = zarr.open_group(str(staging), mode="r+", zarr_format=3)
    group.attrs.put({**jsonable(attrs), "index": index, "committed": False})
    final = store.path / EPISODES / name
    try:
        os.rename(staging, final)
    except OSError as exc:
        raise DatasetError(f"cannot commit episode {index}: {final} already exists (another recorder?)") from exc
    committed = zarr.open_group(str(final), mode="r+", zarr_format=3)
    committed.attrs["committed"] = True
    return EpisodeInfo(index=index, length=length, attrs={**attrs, "index": index, "committed": True})


def settle_pending_writes(timeout_s: float = 300.0) -> None:
    """Wait until zarr's IO loop has finished every write it started (none is cancelled).

    Called on the failure path only, before a half-written store or staging group is removed,
    so the removal is final: after it no thread of this process writes there any more.
    """
    from zarr.core import sync as zarr_sync  # zarr's one IO loop (zarr >= 3)

    loop = getattr(zarr_sync, "loop", [None])[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def _drain() -> None:
        me = asyncio.current_task()
        while pending := [t for t in asyncio.all_tasks() if t is not me and not t.done()]:
            await asyncio.wait(pending)

    future = asyncio.run_coroutine_threadsafe(_drain(), loop)
    try:
        future.result(timeout_s)
    except TimeoutError:
        future.cancel()  # a write hung on the file system: removal goes ahead regardless


def discard_store(path: Path) -> None:
    """Remove ``path`` (a store this process created and failed to fill) for good.

    zarr's writes still in flight finish first (`settle_pending_writes`), and Ctrl-C is held off
    until the removal is done (main thread only): afterwards nothing of this process writes
    there, so no ``_staging/`` skeleton can reappear and block a rerun.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        settle_pending_writes()
        shutil.rmtree(path, ignore_errors=True)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _check_record(meta: DatasetMeta, record: EpisodeRecord) -> None:
    """Refuse an episode that does not fit the dataset, before anything is written."""
    t = len(record)
    if record.frames.dtype != np.uint8 or record.frames.shape[1:] != tuple(meta.frame_shape):
        raise DatasetError(
            f"episode frames are {record.frames.dtype}{list(record.frames.shape[1:])}, the "
            f"dataset holds uint8{list(meta.frame_shape)}: collect into a new --out"
        )
    for kind, specs, arrays in (
        ("telemetry", meta.telemetry, record.telemetry),
        ("actions", meta.actions, record.actions),
    ):
        want = {s.name: s.size for s in specs}
        if set(arrays) != set(want):
            raise DatasetError(
                f"episode {kind} signals {sorted(arrays)} differ from the dataset's "
                f"{sorted(want)}: collect into a new --out"
            )
        for key, arr in arrays.items():
            if arr.shape != (t, want[key]):
                raise DatasetError(f"{kind}/{key} has shape {arr.shape}, expected {(t, want[key])}")
            if not np.all(np.isfinite(arr)):
                raise DatasetError(
                    f"{kind}/{key} holds NaN or Inf values: the episode was not committed; "
                    "check the simulator adapter"
                )


def episode_moments(record: EpisodeRecord) -> dict[str, SignalMoments]:
    """Per-episode sufficient statistics, merged exactly across episodes later."""
    out = {"frames": SignalMoments.of_uint8(record.frames.reshape(-1, record.frames.shape[-1]))}
    for kind, arrays in (("telemetry", record.telemetry), ("actions", record.actions)):
        for key, arr in arrays.items():
            out[f"{kind}/{key}"] = SignalMoments.of(np.asarray(arr, np.float64))
    return out
