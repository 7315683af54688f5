"""Where a resume continues: the checkpoint, checked in full before anything starts.

A damaged checkpoint (a truncated or garbage file, a disk that filled up) must cost one error
line that names it and offers the last intact one, never a traceback or a silent restart from
scratch; `--resume RUN@BATCH` then continues from the offered checkpoint and sets the damaged
later ones aside (kept in ``checkpoints/damaged/``, nothing deleted).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivelab.runs.checkpoints import (
    CheckpointError,
    checkpoint_problem,
    last_intact_checkpoint,
    list_checkpoints,
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
    if problem is not None:
        intact = last_intact_checkpoint(run.checkpoints, below=target)
        offer = (f"the last intact one is batch {intact}: resume with `--resume {run.path}@{intact}`"
                 if intact is not None else "no intact checkpoint is left: start a new run")
        raise CheckpointError(f"checkpoint batch {target} of {run.path} is damaged ({problem}); {offer}")
    later = [b for b in available if b > target]
    intact_later = [b for b in later if checkpoint_problem(run.checkpoints, b) is None]
    if intact_later:
        raise RunError(
            f"{run.path} has an intact checkpoint after batch {target} (batch {intact_later[-1]}): "
            f"resume without @{target}, or start a new run from it with model.init_from"
        )
    return ResumePoint(target, tuple(later))
