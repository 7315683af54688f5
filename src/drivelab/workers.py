"""Episodes in parallel worker processes: the one pool collection and evaluation share.

A *job* is a picklable object sent to every spawned worker: `open()` builds the heavy things
(env, expert, policy) once inside the worker, `run(task, report)` drives one episode, `close()`
tidies up. Workers pull task numbers from a queue, so faster workers take more episodes, and
every result is keyed by its task, so the outcome never depends on which worker ran what.
Spawned (not forked) processes keep pygame, Box2D and torch state out of the parent.
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
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        job.open()
    except Exception as exc:
        events.put(("error", -1, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    try:
        while True:
            task = tasks.get()
            if task is None:
                return
            try:
                result = job.run(task, lambda n: events.put(("progress", n)))
                events.put(("done", task, result))
            except Exception as exc:
                events.put(("error", task, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        job.close()


def run_jobs(
    job: EpisodeJob,
    tasks: Sequence[int],
    workers: int,
    on_progress: Callable[[int], None] | None = None,
    on_done: Callable[[int, Any], None] | None = None,
    on_error: Callable[[int, str, str], bool] | None = None,
) -> None:
    """Run ``job`` on every task in ``workers`` processes.

    ``on_error(task, message, traceback)`` decides what a failed task means: return True to go on
    with the others (evaluation marks the episode failed), False to stop everything (collection).
    A task of -1 is a worker that could not even open its job. One worker runs the job in this
    process (`_run_here`): no process is spawned, so a caller's script without a main guard is
    never re-executed.
    """
    n_workers = max(1, min(workers, len(tasks)))
    if n_workers == 1:
        _run_here(job, tasks, on_progress, on_done, on_error)
        return
    ctx = mp.get_context("spawn")
    task_q, events = ctx.Queue(), ctx.Queue()
    for t in tasks:
        task_q.put(t)
    for _ in range(n_workers):
        task_q.put(None)
    procs = [
        ctx.Process(target=_worker_main, args=(job, task_q, events), daemon=True)
        for _ in range(n_workers)
    ]
    for p in procs:
        p.start()
    finished = 0
    try:
        while finished < len(tasks):
            try:
                event = events.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise WorkersDied(f"all workers exited with {len(tasks) - finished} task(s) left") from None
                continue
            kind = event[0]
            if kind == "progress":
                if on_progress:
                    on_progress(event[1])
            elif kind == "done":
                finished += 1
                if on_done:
                    on_done(event[1], event[2])
            else:
                _, task, message, trace = event
                if not (on_error and on_error(task, message, trace)):
                    return
                if task != -1:  # -1: a worker that never opened; the others carry on
                    finished += 1
    finally:
        for p in procs:
            if finished < len(tasks):
                p.terminate()  # stopping early: do not wait for episodes nobody will read
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for q in (task_q, events):  # release the queues' pipes and semaphores now, not at exit
            q.cancel_join_thread()
            q.close()


def _run_here(
    job: EpisodeJob,
    tasks: Sequence[int],
    on_progress: Callable[[int], None] | None,
    on_done: Callable[[int, Any], None] | None,
    on_error: Callable[[int, str, str], bool] | None,
) -> None:
    """`run_jobs` with one worker, in this process: the same callbacks in the same order.

    A spawned worker re-imports the caller's ``__main__``; a notebook or a script without an
    ``if __name__ == "__main__"`` guard would run again in it (training anew, then "workers
    died"). A job's ``open()`` may set torch's thread count for a worker process: it is put back.
    """
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # as in a worker: no window for a headless env
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        try:
            job.open()
        except Exception as exc:
            if not (on_error and on_error(-1, f"{type(exc).__name__}: {exc}", traceback.format_exc())):
                return
            raise WorkersDied(f"all workers exited with {len(tasks)} task(s) left") from None
        try:
            for task in tasks:
                try:
                    result = job.run(task, on_progress or (lambda _n: None))
                except Exception as exc:
                    if not (on_error and on_error(task, f"{type(exc).__name__}: {exc}", traceback.format_exc())):
                        return
                    continue
                if on_done:
                    on_done(task, result)
        finally:
            job.close()
    finally:
        if threads is not None and sys.modules.get("torch") is not None:
            sys.modules["torch"].set_num_threads(threads)
