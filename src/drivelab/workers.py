"""Episodes in parallel worker processes: the one pool collection and evaluation share.

A *job* is a picklable object sent to every spawned worker: `open()` builds the heavy things
(env, expert, policy) once inside the worker, `run(task, report)` drives one episode, `close()`
tidies up. Workers pull task numbers from a queue, so faster workers take more episodes, and
every result is keyed by its task, so the outcome never depends on which worker ran what.
The calling process is one of the workers; the others are spawned (not forked) processes, which
keep pygame, Box2D and torch state out of the parent.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

#: Every verb's ``--workers`` default (collect, eval, diagnose, demo): one process per core, at
#: most two — each worker holds an env and a policy, and more than the cores only contend.
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))


class EpisodeJob(Protocol):
    def open(self) -> None: ...

    def run(self, task: int, report: Callable[[int], None]) -> Any: ...

    def close(self) -> None: ...


class WorkersDied(RuntimeError):
    """Every worker exited before all tasks were done (killed, out of memory...)."""


def _exit_on_terminate(_signum: int, _frame: object) -> None:
    """Unwind on ``terminate()``: the parent stopped us, so what we were writing is abandoned
    (a staging leftover at worst) and its complaints about that are noise, not news."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    raise SystemExit(0)


def _worker_main(job: EpisodeJob, tasks: Any, events: Any) -> None:
    # Ctrl-C reaches the whole process group; only the parent decides what it means (and
    # stops the workers), so a worker neither dies mid-write nor prints its own traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Stopped early (terminate): unwind like a normal exit, so multiprocessing's finalizers
    # release the semaphores this process made (numcodecs' lock) instead of leaking them.
    signal.signal(signal.SIGTERM, _exit_on_terminate)
    _drive(job, tasks.get, events.put, lambda: None)


def _drive(job: EpisodeJob, next_task: Callable[[], int | None], emit: Callable[[tuple[Any, ...]], None],
           between: Callable[[], None]) -> None:
    """One worker's life, in a spawned process or in this one: open the job, run tasks until
    the stop (None), close. Every outcome goes to ``emit`` (the event queue, or this process's
    `_Outcomes`); ``between`` runs after each report and each task (this process: hand on the
    other workers' events)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # no window for a headless env
    try:
        job.open()
    except Exception as exc:
        emit(_failure(-1, exc))
        return

    def report(n: int) -> None:
        emit(("progress", n))
        between()

    try:
        while (task := next_task()) is not None:
            try:
                result = job.run(task, report)
            except _Stop:
                raise
            except Exception as exc:
                emit(_failure(task, exc))
                continue
            emit(("done", task, result))
            between()
    finally:
        job.close()


def _failure(task: int, exc: Exception) -> tuple[str, int, str, str]:
    return ("error", task, f"{type(exc).__name__}: {exc}", traceback.format_exc())


class _Stop(Exception):
    """``on_error`` said stop: unwinds this process's own episode and the event loop."""


class _Outcomes:
    """Every worker's events (this process's own included) delivered to the caller's callbacks
    in one place, with the count of finished tasks."""

    def __init__(self, total: int, on_progress: Callable[[int], None] | None,
                 on_done: Callable[[int, Any], None] | None,
                 on_error: Callable[[int, str, str], bool] | None) -> None:
        self.total, self.finished = total, 0
        self._progress, self._done, self._error = on_progress, on_done, on_error

    @property
    def left(self) -> int:
        """Tasks neither done nor failed yet."""
        return self.total - self.finished

    def handle(self, event: tuple[Any, ...]) -> None:
        """One event from a worker; raises `_Stop` when a failure must end the run."""
        kind = event[0]
        if kind == "progress":
            if self._progress:
                self._progress(event[1])
        elif kind == "done":
            self.finished += 1
            if self._done:
                self._done(event[1], event[2])
        else:
            _, task, message, trace = event
            if not (self._error and self._error(task, message, trace)):
                raise _Stop
            if task != -1:  # -1: a worker that never opened; the others carry on
                self.finished += 1

    def drain(self, events: Any) -> None:
        """Deliver what the other workers sent while this process drove (never waits)."""
        while events is not None:
            try:
                event = events.get_nowait()
            except queue.Empty:
                return
            self.handle(event)


def run_jobs(
    job: EpisodeJob,
    tasks: Sequence[int],
    workers: int,
    on_progress: Callable[[int], None] | None = None,
    on_done: Callable[[int, Any], None] | None = None,
    on_error: Callable[[int, str, str], bool] | None = None,
) -> None:
    """Run ``job`` on every task in ``workers`` processes, this one being one of them.

    ``on_error(task, message, traceback)`` decides what a failed task means: return True to go on
    with the others (evaluation marks the episode failed), False to stop everything (collection).
    A task of -1 is a worker that could not even open its job.

    This process drives episodes too (`_work_here`) and delivers the others' events between its
    own steps: it would otherwise sit idle while ``workers`` spawned processes paid their start-up
    (~0.6 s of imports each), and with one worker nothing is spawned at all, so a caller's script
    without a main guard is never re-executed.
    """
    n_workers = max(1, min(workers, len(tasks)))
    outcomes = _Outcomes(len(tasks), on_progress, on_done, on_error)
    if n_workers == 1:
        pending = iter([*tasks, None])
        try:
            _work_here(job, lambda: next(pending), None, outcomes)
        except _Stop:
            return
        if outcomes.left:
            raise WorkersDied(f"all workers exited with {outcomes.left} task(s) left")
        return
    ctx = mp.get_context("spawn")
    task_q, events = ctx.Queue(), ctx.Queue()
    for t in tasks:
        task_q.put(t)
    for _ in range(n_workers):  # one stop per worker, this process included
        task_q.put(None)
    procs = [
        ctx.Process(target=_worker_main, args=(job, task_q, events), daemon=True)
        for _ in range(n_workers - 1)
    ]
    for p in procs:
        p.start()
    try:
        _work_here(job, task_q.get, events, outcomes)
        while outcomes.left:
            try:
                event = events.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise WorkersDied(f"all workers exited with {outcomes.left} task(s) left") from None
                continue
            outcomes.handle(event)
    except _Stop:
        return
    finally:
        for p in procs:
            if outcomes.left:
                p.terminate()  # stopping early: do not wait for episodes nobody will read
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for q in (task_q, events):  # release the queues' pipes and semaphores now, not at exit
            q.cancel_join_thread()
            q.close()


def _work_here(job: EpisodeJob, next_task: Callable[[], int | None], events: Any, outcomes: _Outcomes) -> None:
    """This process as one worker (`_drive`), delivering its own outcomes and, between its
    steps, the other workers'. A job's ``open()`` may set torch's thread count for a worker
    process: it is put back."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        _drive(job, next_task, outcomes.handle, lambda: outcomes.drain(events))
    finally:
        if threads is not None and sys.modules.get("torch") is not None:
            sys.modules["torch"].set_num_threads(threads)
