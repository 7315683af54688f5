"""Checkpoints: weights as safetensors, the trainer's state beside them, both written atomically.

A checkpoint at batch N is two files in ``checkpoints/``:

- ``batch_<N>.state.pt`` — what resuming needs beyond the weights: optimizer, schedule, the RNG
  states of torch / numpy / python (per rank), and the data position (epoch + batch in epoch);
- ``batch_<N>.safetensors`` — the policy's weights, readable without drivelab or pickle.

The state file is written first and the weights file last, so the weights file doubles as the
commit marker: a checkpoint "exists" exactly when its ``.safetensors`` does. Each file is written to
a temporary name, fsynced and moved into place with ``os.replace``, so a trainer killed at any
moment leaves either the previous complete checkpoint or the new one — never a torn file.
"""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from drivelab.errors import DrivelabError
from drivelab.outputs import write_bytes

WEIGHTS_PATTERN = re.compile(r"^batch_(\d+)\.safetensors$")


class CheckpointError(DrivelabError):
    """A checkpoint that is missing, damaged or does not fit the policy."""


def weights_path(folder: Path, batch: int) -> Path:
    return folder / f"batch_{batch}.safetensors"


def state_path(folder: Path, batch: int) -> Path:
    return folder / f"batch_{batch}.state.pt"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Replace ``path`` so that readers see the old file or the whole new one, never a part.

    The trainer's own bookkeeping (run.json, periods.json, checkpoints) is replaced on purpose,
    hence ``force``; a full disk raises `OutputError` and leaves the previous file in place.
    """
    write_bytes(path, payload, force=True, flag="checkpoint")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def list_checkpoints(folder: Path) -> list[int]:
    """Batches of the complete checkpoints in ``folder`` (weights present), ascending."""
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = WEIGHTS_PATTERN.match(child.name)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def save_checkpoint(
    folder: Path,
    batch: int,
    weights: dict[str, torch.Tensor],
    trainer_state: dict[str, Any],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the trainer state, then the weights (the commit marker). Refuses to overwrite."""
    final = weights_path(folder, batch)
    if final.exists():
        raise CheckpointError(f"{final} already exists: checkpoints are never overwritten")
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(trainer_state, buffer)
    atomic_write_bytes(state_path(folder, batch), buffer.getvalue())
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    meta = {"format": "drivelab.weights", "batch": str(batch), **(metadata or {})}
    atomic_write_bytes(final, safetensors_bytes(tensors, metadata=meta))
    return final


def _reason(exc: BaseException) -> str:
    """A short, safe cause: the first line of the library's message, minus advice not to follow.

    torch's unpickler suggests ``weights_only=False`` for a file it cannot read; for a damaged
    or foreign file that advice would run arbitrary code, so it is never passed on.
    """
    text = (str(exc).strip().splitlines() or [""])[0]
    if not text or "weights_only" in text or len(text) > 160:
        text = type(exc).__name__
    if isinstance(exc, OSError) and exc.errno == 22:  # what a truncated zip archive gives
        text = "truncated or not a trainer-state file"
    return text


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; a file that does not parse is one CheckpointError.

    safetensors raises its own ``SafetensorError`` (no OSError/ValueError subclass) for a
    truncated, empty or lying header, so everything but an interrupt is caught here.
    """
    if not Path(path).is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise CheckpointError(
            f"cannot read weights {path} ({_reason(exc)}): the file is damaged or not a "
            "safetensors file"
        ) from None


def load_trainer_state(folder: Path, batch: int) -> dict[str, Any]:
    path = state_path(folder, batch)
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: checkpoint {batch} has weights but no trainer state, so it can "
            "seed a new run (transfer) but not be resumed"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read trainer state {path} ({_reason(exc)}): the file is damaged") from None
    if not isinstance(state, dict) or "batch" not in state:
        raise CheckpointError(f"{path} is not a drivelab trainer state: the file is damaged")
    return state


def checkpoint_problem(folder: Path, batch: int, resumable: bool = True) -> str | None:
    """Why checkpoint ``batch`` cannot be used (read in full), or None when it is intact."""
    try:
        load_weights(weights_path(folder, batch))
        if resumable:
            load_trainer_state(folder, batch)
    except CheckpointError as exc:
        return str(exc)
    return None


def last_intact_checkpoint(folder: Path, below: int | None = None) -> int | None:
    """The newest checkpoint (before ``below``) whose weights and trainer state both read."""
    for batch in reversed(list_checkpoints(folder)):
        if (below is None or batch < below) and checkpoint_problem(folder, batch) is None:
            return batch
    return None


def set_aside_checkpoint(folder: Path, batch: int) -> Path:
    """Move a damaged checkpoint into ``checkpoints/damaged/`` (kept for inspection, not listed)."""
    target = folder / "damaged"
    target.mkdir(exist_ok=True)
    for source in (state_path(folder, batch), weights_path(folder, batch)):
        if source.exists():
            os.replace(source, target / source.name)
    return target


# ---------------------------------------------------------------------------- RNG states
def capture_rng_state() -> dict[str, Any]:
    """This process's random generators, as plain tensors/lists (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(py_state), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put the generators back exactly as `capture_rng_state` found them."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, py_state, gauss_next = state["python"]
    random.setstate((version, tuple(py_state), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
