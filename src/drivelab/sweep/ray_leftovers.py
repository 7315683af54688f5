"""Leftovers of a local Ray whose driver was killed: recorded at start, reaped at the next start.

Why: a local Ray's gcs_server and raylet die with their driver, but after a ``kill -9`` of the
driver (a sweep or live run) Ray's DashboardAgent and RuntimeEnvAgent outlive it, orphaned, for
good (they even ignore SIGTERM). So every local Ray that drivelab starts is recorded here (its
driver's pid and start time, its session folder); the next start reaps the Ray processes of every
recorded session whose driver is gone, then forgets the record.

Only sessions drivelab started itself are ever touched, never a user's ``ray start`` cluster, and
of those only processes that are Ray's (``ray::...`` workers and agents, Ray's own executables),
of this user, started after that session's driver, and tied to that session folder (on their
command line, or by a log file they hold open under it): a pid reused by another program, or a
``tail -f`` of the session's logs, is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

#: Seconds a leftover gets to end on SIGTERM before SIGKILL (the agents ignore SIGTERM).
GRACE_S = 2.0


def _psutil() -> Any:
    """psutil as Ray ships it: importing Ray puts its own copy on the path first."""
    import ray  # noqa: F401, I001
    import psutil

    return psutil


def sessions_dir() -> Path:
    """This user's records of drivelab-started local Ray sessions (one JSON file each)."""
    return Path(tempfile.gettempdir()) / f"drivelab-ray-{os.getuid()}"


def _own_sessions_dir() -> Path | None:
    """`sessions_dir`, made if missing; None when it is not a private folder of this user (in a
    shared temp folder someone else could have made it, and records there choose what is ended)."""
    folder = sessions_dir()
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return folder


def record_local_session(session_dir: str) -> Path | None:
    """Note that this process drives the local Ray session ``session_dir`` (called once it is up)."""
    psutil = _psutil()
    me = psutil.Process()
    folder = _own_sessions_dir()
    if folder is None:
        return None
    record = {"driver_pid": me.pid, "driver_started": me.create_time(), "session_dir": session_dir}
    path = folder / f"{Path(session_dir).name}.json"
    temporary = path.with_suffix(f".{me.pid}.tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)  # a reaper never reads half a record
    return path


def reap_dead_sessions() -> int:
    """End the leftovers of every recorded session whose driver is gone; how many were ended."""
    folder = _own_sessions_dir()
    ended = 0
    for path in sorted(folder.glob("*.json")) if folder is not None else []:
        try:
            record = json.loads(path.read_text())
            pid, started, session = int(record["driver_pid"]), float(record["driver_started"]), str(record["session_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                path.unlink()  # not a record this module wrote: nothing to reap from it
            continue
        if _alive(pid, started):
            continue  # a running sweep or live run: its Ray is in use
        ended += _end(session_processes(session, started))
        with contextlib.suppress(OSError):
            path.unlink()
    return ended


def session_processes(session_dir: str, since: float) -> list[Any]:
    """This user's Ray processes of the session ``session_dir`` started at or after ``since``."""
    import ray

    psutil = _psutil()
    package = Path(ray.__file__).parent
    ray_paths = {str(package), str(package.resolve())}
    sessions = {session_dir.rstrip(os.sep), str(Path(session_dir).resolve())}
    uid = os.getuid()
    found = []
    for proc in psutil.process_iter(["uids", "cmdline", "create_time", "status"]):
        info = proc.info
        if proc.pid == os.getpid() or info["uids"] is None or info["uids"].real != uid:
            continue
        if info["status"] == psutil.STATUS_ZOMBIE or (info["create_time"] or 0) < since - 1:
            continue
        command = info["cmdline"] or []
        is_ray = bool(command) and (command[0].startswith("ray::") or _mentions(command, ray_paths))
        if is_ray and (_mentions(command, sessions) or _holds_file_under(proc, sessions)):
            found.append(proc)
    return found


def _mentions(command: list[str], paths: set[str]) -> bool:
    """An argument names one of ``paths`` (a whole path: ``..._544`` is not ``..._5441``)."""
    pattern = re.compile("(?:" + "|".join(re.escape(p) for p in paths) + r")(?=$|[/\s,;:'\"])")
    return any(pattern.search(arg) for arg in command)


def _holds_file_under(proc: Any, folders: set[str]) -> bool:
    psutil = _psutil()
    try:
        return any(f.path.startswith(folder + os.sep) for f in proc.open_files() for folder in folders)
    except (psutil.Error, OSError):
        return False


def _alive(pid: int, started: float) -> bool:
    """The driver ``pid`` still runs (the same process: its start time matches, not a reused pid)."""
    psutil = _psutil()
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def _end(procs: list[Any]) -> int:
    """SIGTERM, a short grace, then SIGKILL for whatever is left; the number of processes ended."""
    psutil = _psutil()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    left = _running_after(procs, GRACE_S)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _running_after(left, GRACE_S)
    return len(procs)


def _running_after(procs: list[Any], seconds: float) -> list[Any]:
    """Those of ``procs`` still running after up to ``seconds`` (a zombie has ended: orphans are
    not our children, so only their new parent can reap them)."""
    psutil = _psutil()
    deadline = time.monotonic() + seconds
    while True:
        left = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
