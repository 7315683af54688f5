"""How a training period that fails ends: the run left honest, the user told one line.

A failed period leaves the run marked ``failed`` with the reason (its checkpoints kept); a new
run that fails before its first checkpoint is removed, so no version looks valid without one. A
full disk and a Ctrl-C each get a line saying what survived and how to go on from it.
"""

from __future__ import annotations

import errno
from contextlib import suppress

from drivelab.errors import DrivelabError, Interrupted
from drivelab.runs.checkpoints import list_checkpoints
from drivelab.runs.folder import RunFolder, now_iso
from drivelab.watch.launcher import WatchPlayer


def period_failed(
    exc: BaseException, run: RunFolder, period: int, fresh: bool, player: WatchPlayer | None,
    record: bool,
) -> BaseException | None:
    """Wind the period down after ``exc``; the error to raise instead of it, if any.

    ``record``: this process writes the run's bookkeeping (rank 0).
    """
    if player is not None:
        end_watch_after_failure(player, run, period, exc)
    if record:
        record_failure(run, period, fresh, exc)
    no_space = find_no_space(exc)
    if no_space is not None:
        return disk_full_error(run, no_space)
    if isinstance(exc, KeyboardInterrupt):
        return interrupted_error(run, fresh)
    return None


def end_watch_after_failure(player: WatchPlayer, run: RunFolder, period: int, exc: BaseException) -> None:
    """Stop the player before the failure is recorded (which may delete the run folder).

    A failed period's checkpoints are still worth watching, so the player finishes them; an
    interrupted one (Ctrl-C) is stopped at once. Nothing here may hide the original failure.
    """
    try:
        keep = isinstance(exc, Exception) and bool(list_checkpoints(run.checkpoints))
        outcome = player.finish() if keep else player.stop()
        if list_checkpoints(run.checkpoints):
            run.update_period(period, watch=player.record(outcome))
    except BaseException:  # a second Ctrl-C while waiting: stop it, report the first failure
        player.stop()


def find_no_space(exc: BaseException) -> OSError | None:
    """The ENOSPC (or quota) error behind ``exc``, wherever the write failed (log, checkpoint)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, DrivelabError) and "No space left" in str(exc):
        return OSError(errno.ENOSPC, "No space left on device")
    return None


def interrupted_error(run: RunFolder, fresh: bool) -> Interrupted:
    """Ctrl-C: say which checkpoint survived and how to go on from it."""
    kept = list_checkpoints(run.checkpoints)
    if not kept:
        return Interrupted("before the first checkpoint: the new run was removed" if fresh else
                           f"no checkpoint of {run.path} was written in this period")
    return Interrupted(f"checkpoint at batch {kept[-1]} kept in {run.path}; resume with "
                       f"`drivelab train --resume {run.path}`")


def disk_full_error(run: RunFolder, exc: OSError) -> DrivelabError:
    """One line for a full disk: what is kept and how to continue once there is room."""
    kept = list_checkpoints(run.checkpoints)
    if not kept:
        return DrivelabError(
            f"no space left on the device while training ({exc.strerror}); nothing was kept "
            f"(the run had no checkpoint yet): free space and train again"
        )
    return DrivelabError(
        f"no space left on the device while training {run.path}: stopped, checkpoint batch "
        f"{kept[-1]} is kept; free space and continue with `drivelab train --resume {run.path}`"
    )


def record_failure(run: RunFolder, period: int, fresh: bool, exc: BaseException) -> None:
    """Leave no run looking valid: remove a new one without checkpoints, else mark it.

    On a full disk the bookkeeping itself may not fit: the run then keeps its last status, which
    a resume corrects, and the original failure is what the user sees.
    """
    with suppress(OSError):
        mark_failure(run, period, fresh, exc)


def mark_failure(run: RunFolder, period: int, fresh: bool, exc: BaseException) -> None:
    checkpoints = list_checkpoints(run.checkpoints)
    if fresh and not checkpoints:
        run.remove()
        return
    interrupted = isinstance(exc, KeyboardInterrupt)
    status = "interrupted" if interrupted else "failed"
    reason = "interrupted" if interrupted else (str(exc).splitlines() or [type(exc).__name__])[0]
    run.update_period(period, ended=now_iso(), status=status)
    run.write_status(status, error=reason, last_checkpoint=checkpoints[-1] if checkpoints else None)
