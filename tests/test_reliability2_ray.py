"""Issue 29, the Ray side: a local Ray on loopback only, no orphans after kill -9, the live and
dagger dataset guard, and refusals that come before Ray (or before anything is made).

One local Ray for the module, started the way drivelab starts it (`start_ray`), and started as
the *next start* after a real drivelab driver with its own local Ray was killed with SIGKILL —
so the orphan check and the socket check share one Ray start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import PILOTNET, quick, run_cli_here
from drivelab.data.store import DatasetStore

ray = pytest.importorskip("ray")
import psutil  # noqa: E402  (Ray's own copy: importing Ray puts it on the path)

#: A real drivelab driver: a local Ray started by `start_ray`, an actor on it, then it waits.
DRIVER = textwrap.dedent("""
    import sys, time
    from drivelab.sweep.engine import start_ray
    import ray

    start_ray(None, 1, num_cpus=1, object_store=80 * 1024 * 1024)

    @ray.remote(num_cpus=0)
    class Probe:
        def ping(self):
            return 1

    probe = Probe.remote()
    ray.get(probe.ping.remote())
    print(ray.get_runtime_context().get_node_id(), flush=True)
    print(ray._private.worker.global_worker.node.get_session_dir_path(), flush=True)
    time.sleep(600)
""")


# ----------------------------------------------------- refusals before Ray, nothing left behind
def _one_error_line(result: subprocess.CompletedProcess, expected: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (expected, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], (expected, lines)
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_address_leaves_nothing_behind(tmp_path: Path) -> None:
    """Issue 29.21: a sweep (or live run) that cannot reach its --address makes no folder.

    In-process, so it runs before this module's Ray starts (with a Ray up, `start_ray` reuses it).
    """
    assert not ray.is_initialized(), "run this test before the module's Ray starts"
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tiny", "base": str(PILOTNET),
        "overrides": {"data.path": str(tmp_path / "d.zarr"), "data.input_size": [64, 64],
                      "train.max_batches": 10},
        "grid": {"train.lr": [0.001, 0.01]}, "seeds": 1, "trial": {"cpus": 1},
    }))
    out, data = tmp_path / "out", tmp_path / "live.zarr"
    for address, expected in ((f"127.0.0.1:{_closed_port()}", "connection refused"),
                              ("no-such-host.invalid:6379", "no host named"),
                              ("head:99999", "is not host:port")):
        started = time.monotonic()
        result = run_cli_here("sweep", str(spec), "--out", str(out), "--address", address)
        assert address in _one_error_line(result, expected) and not out.exists(), list(tmp_path.iterdir())
        result = run_cli_here("live", str(PILOTNET), f"data.path={data}", "data.val_split=null",
                              "live.stop.batches=5", "--address", address)
        assert address in _one_error_line(result, expected) and not data.exists()
        assert time.monotonic() - started < 60  # Ray itself would retry for minutes


def test_more_collectors_than_the_cores_can_share_is_one_line_before_ray(tmp_path: Path) -> None:
    """Issue 29.15: `live --collectors 100000` (Ray's resource precision error before)."""
    data = tmp_path / "d.zarr"
    common = ["live", str(PILOTNET), f"data.path={data}", "data.val_split=null", "live.stop.batches=5"]
    for extra in (["--collectors", "100000"], ["live.collectors=100000"]):
        started = time.monotonic()
        line = _one_error_line(run_cli_here(*common, *extra), "100000 collectors")
        assert f"{os.cpu_count()} cores" in line and "at most" in line, line
        assert not data.exists() and time.monotonic() - started < 30  # before any Ray or dataset


def _tiny_dagger(data: Path, *extra: str) -> list[str]:
    """A dagger config without any live.stop (issue 29.20): rounds of 1 short episode, 5 batches."""
    return [str(PILOTNET), *quick(data, "data.val_split=null", "train.checkpoint_every=5", "train.log_every=5",
                                  "train.val_every=1000", "train.warmup_batches=0", "live.max_steps=40",
                                  "live.round_episodes=1", "live.round_batches=5", "live.beta.schedule=constant",
                                  "live.beta.start=0.5", "live.beta.per=step", *extra)]


def test_dagger_and_live_refuse_an_existing_dataset_unless_appending(tmp_path: Path) -> None:
    """Issue 29.11 (and 29.20: `live.*` overrides without `live.stop` are fine for dagger)."""
    data, runs = tmp_path / "d.zarr", tmp_path / "runs"
    first = run_cli_here("dagger", *_tiny_dagger(data), "--rounds", "1", "--runs", str(runs))
    assert first.returncode == 0, first.stderr
    drivers = [e.attrs["live_driver"] for e in DatasetStore.open(data).episodes()]
    assert drivers[0] == "expert" and drivers[1] in ("mixed", "policy"), drivers

    def episodes() -> int:
        return len(DatasetStore.open(data).episodes())

    held = "2 episodes"
    again = run_cli_here("dagger", *_tiny_dagger(data), "--rounds", "0", "--runs", str(runs))
    line = _one_error_line(again, f"already holds {held}")
    assert "1 policy-driven from live/dagger" in line and "1 expert-driven from live/dagger" in line, line
    assert "--append" in line and episodes() == 2
    live = run_cli_here("live", str(PILOTNET), f"data.path={data}", "data.val_split=null", "live.stop.batches=5",
                        "--runs", str(runs))
    assert "--append" in _one_error_line(live, f"already holds {held}") and episodes() == 2
    missing = run_cli_here("dagger", *_tiny_dagger(tmp_path / "none.zarr"), "--append", "--runs", str(runs))
    _one_error_line(missing, "does not exist")

    appended = run_cli_here("dagger", *_tiny_dagger(data), "--rounds", "0", "--append", "--runs", str(runs))
    assert appended.returncode == 0, appended.stderr
    said = appended.stdout.replace("\n", " ")
    assert f"appending to {data}, which holds {held}" in said, said
    assert "1 policy-driven from live/dagger" in said and "also trained on what was there before" in said, said
    assert episodes() == 3


# ------------------------------------------ one local Ray: the next start after a kill -9
def _identity(proc: psutil.Process) -> tuple[int, float, str]:
    """pid, start time and a short command: the program's file name first, so a long install path
    (a CI checkout under /check/work/...) never cuts `gcs_server` or `raylet` off the end."""
    command = proc.cmdline() or [proc.name()]
    return proc.pid, proc.create_time(), " ".join([Path(command[0]).name, *command[1:]])[:80]


def _still_running(pid: int, started: float) -> bool:
    """The same process (not a reused pid) still runs; a zombie has ended."""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - started) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def next_start():
    """A drivelab driver with a local Ray, killed -9; then drivelab's next local Ray start here.

    Yields the killed session's processes (pid, start time, command) as they were before the kill,
    and a `tail -f` of that session's raylet log (not Ray's: the reaper must leave it alone).
    """
    from drivelab.sweep.engine import start_ray

    assert not ray.is_initialized()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env={**os.environ, "SDL_VIDEODRIVER": "dummy"})
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip()  # the node is up
        session = Path(driver.stdout.readline().strip())
        reader = subprocess.Popen(["tail", "-f", str(session / "logs" / "raylet.out")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30  # the raylet starts its two agents next to the workers
        while time.monotonic() < deadline:
            procs = psutil.Process(driver.pid).children(recursive=True)
            if sum(p.cmdline()[:1] != [] and p.cmdline()[0].startswith("ray::") for p in procs) >= 3:
                break
            time.sleep(0.2)
        killed = [_identity(p) for p in psutil.Process(driver.pid).children(recursive=True)]
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            driver.kill()
    assert start_ray(None, 1, num_cpus=2, object_store=80 * 1024 * 1024)
    yield killed, reader
    ray.shutdown()
    reader.kill()
    reader.wait()
    for pid, started, _ in killed:  # whatever a failed reap left, the suite does not leak it
        if _still_running(pid, started):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def test_a_local_ray_listens_on_loopback_only(next_start: tuple) -> None:
    """Issue 29.1: every Ray process of a local session (the driver too) listens on 127.0.0.1 only.

    The session's processes are this driver's descendants: gcs_server, raylet (object manager),
    the dashboard and runtime-env agents, the log monitor, and a task's and an actor's worker.
    """

    @ray.remote(num_cpus=1)
    def pid() -> int:
        return os.getpid()

    @ray.remote(num_cpus=0)
    class Actor:
        def pid(self) -> int:
            return os.getpid()

    actor = Actor.remote()
    workers = {ray.get(pid.remote()), ray.get(actor.pid.remote())}
    me = psutil.Process()
    listeners: dict[str, list[str]] = {}
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            name = f"{proc.pid} {proc.name()} {' '.join(proc.cmdline())[:60]}"
            for conn in proc.net_connections(kind="inet"):  # TCP listeners, and UDP bound to no peer
                if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr):
                    listeners.setdefault(name, []).append(f"{conn.laddr.ip}:{conn.laddr.port}")
    everywhere = {name: [a for a in addresses if not _is_loopback(a.rsplit(":", 1)[0])]
                  for name, addresses in listeners.items()}
    assert not {n: a for n, a in everywhere.items() if a}, listeners
    names = " ".join(listeners)
    assert "gcs_server" in names and "raylet" in names, listeners
    assert str(me.pid) in {n.split()[0] for n in listeners}, listeners  # the driver's own server
    assert workers <= {int(n.split()[0]) for n in listeners}, listeners  # task and actor workers
    ray.kill(actor)


def test_a_killed_drivers_ray_processes_do_not_outlive_the_next_start(next_start: tuple) -> None:
    """Issue 29.27: after kill -9 of a driver, its agents and workers are gone once Ray starts again;
    a program that is not Ray's, reading that session's log, is left alone."""
    killed, reader = next_start
    commands = " ".join(command for _, _, command in killed)
    assert "gcs_server" in commands and "raylet" in commands and len(killed) >= 4, killed
    left = [(pid, command) for pid, started, command in killed if _still_running(pid, started)]
    assert not left, left
    assert reader.poll() is None  # `tail -f` of the dead session's log: not Ray's, not ended


def test_a_running_drivers_ray_is_left_alone(next_start: tuple) -> None:
    """The reaper ends only sessions whose driver is gone: this process's own Ray survives it, and
    a file in the records folder that is no record is dropped without a word."""
    from drivelab.sweep.ray_leftovers import reap_dead_sessions, sessions_dir

    junk = sessions_dir() / "junk.json"
    junk.write_text("[not a record")
    reap_dead_sessions()
    assert not junk.exists()

    @ray.remote(num_cpus=1)
    def one() -> int:
        return 1

    assert ray.get(one.remote(), timeout=60) == 1
