"""Where a resume continues: the checkpoint, checked in full before anything starts.

A damaged checkpoint (a truncated or garbage file, a disk that filled up) must cost one error
line that names it and offers the last intact one, never a traceback or a silent restart from
scratch; `--resume RUN@BATCH` then continues from the offered checkpoint and sets the damaged
later ones aside (kept in ``checkpoints/damaged/``, nothing deleted). A resume also runs the
run's own config: a changed one is refused, naming what changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from drivelab.config import ExperimentConfig, load_config
from drivelab.runs.checkpoints import (
    CheckpointError,
    checkpoint_problem,
    last_intact_checkpoint,
    list_checkpoints,
    load_trainer_state,
    load_weights,
    set_aside_checkpoint,
    weights_path,
)
from drivelab.runs.folder import RunError, RunFolder, resolve_checkpoint


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a resume continues from, and the damaged later ones it sets aside."""

    batch: int
    damaged_after: tuple[int, ...] = ()


def resume_point(run: RunFolder, batch: int | None) -> ResumePoint:
    """Check the checkpoint to resume from (read in full) before anything starts.

    Without ``@BATCH`` the latest checkpoint is used; if it is damaged the message names it and
    the last intact one, which ``--resume RUN@BATCH`` then continues from. A later checkpoint
    that is intact is never skipped: that would fork the run's history.
    """
    available = list_checkpoints(run.checkpoints)
    if not available:
        raise RunError(f"{run.path} has no checkpoint to resume from: start a new run")
    target = available[-1] if batch is None else batch
    if target not in available:
        resolve_checkpoint(f"{run.path}@{target}")  # raises, listing the nearest checkpoints
    problem = checkpoint_problem(run.checkpoints, target)
    later = [b for b in available if b > target]
    intact_later = [b for b in later if checkpoint_problem(run.checkpoints, b) is None]
    if problem is not None:
        raise CheckpointError(f"checkpoint batch {target} of {run.path} is damaged ({problem}); "
                              f"{_offer(run, target, available, intact_later)}")
    if intact_later:
        raise RunError(
            f"{run.path} has an intact checkpoint after batch {target} (batch {intact_later[-1]}): "
            f"resume without @{target}, or start a new run from it with model.init_from"
        )
    return ResumePoint(target, tuple(later))


def _offer(run: RunFolder, target: int, available: list[int], intact_later: list[int]) -> str:
    """Where to resume instead of a damaged checkpoint: the newest intact one.

    A resume never skips an intact later checkpoint, so when there are some (``@10`` damaged,
    20 and 30 intact) the only resume to offer is from the newest of them.
    """
    if intact_later:
        newest = intact_later[-1]
        ref = f"{run.path}" if newest == available[-1] else f"{run.path}@{newest}"
        if len(intact_later) == 1:
            return f"a later checkpoint is intact (batch {newest}): resume from it with `--resume {ref}`"
        shown = ", ".join(map(str, intact_later[-5:]))
        return (f"later checkpoints are intact (batches {'..., ' if len(intact_later) > 5 else ''}"
                f"{shown}): resume from the newest, batch {newest}, with `--resume {ref}`")
    intact = last_intact_checkpoint(run.checkpoints, below=target)
    if intact is None:
        return "no intact checkpoint is left: start a new run"
    return f"the last intact one is batch {intact}: resume with `--resume {run.path}@{intact}`"


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain (JSON-like) configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old) + [k for k in new if k not in old]
        found: list[str] = []
        for key in keys:
            found += config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        found = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            found += config_differences(a, b, f"{prefix}{index}.")
        return found
    return [] if old == new else [prefix.rstrip(".")]


def check_resume_config(run: RunFolder, config: ExperimentConfig) -> None:
    """Refuse a resume whose resolved config differs from the run's ``config.yaml``."""
    saved = load_config(run.config_path)
    changed = config_differences(saved.model_dump(mode="json"), config.model_dump(mode="json"))
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise RunError(
            f"cannot resume {run.path}: the config differs from its config.yaml in {shown}; "
            "resume with the run's own config (or no CONFIG), or start a new run"
        )


def load_resume_state(
    run: RunFolder, point: ResumePoint, policy: torch.nn.Module, world_size: int, total: int,
    set_aside: bool,
) -> dict[str, Any]:
    """The trainer state at ``point``, the policy given its weights; refused if it cannot go on.

    ``set_aside``: this process moves the damaged later checkpoints aside (rank 0).
    """
    batch = point.batch
    if point.damaged_after and set_aside:
        for damaged in point.damaged_after:  # kept for inspection, no longer a checkpoint
            set_aside_checkpoint(run.checkpoints, damaged)
    state = load_trainer_state(run.checkpoints, batch)
    if state.get("world_size") != world_size:
        raise RunError(
            f"{run.path} was trained on {state.get('world_size')} process(es), this resume has "
            f"{world_size}: resume with the same train.devices"
        )
    if state["batch"] >= total:
        raise RunError(
            f"{run.path} is already trained to batch {state['batch']} of {total}: nothing to resume"
        )
    try:
        policy.load_state_dict(load_weights(weights_path(run.checkpoints, batch)))
    except RuntimeError as exc:
        raise CheckpointError(
            f"{weights_path(run.checkpoints, batch)} does not fit the configured policy "
            f"({str(exc).splitlines()[0][:120]})"
        ) from None
    return state
