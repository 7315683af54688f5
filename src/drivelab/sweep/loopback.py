"""A local Ray reachable from this machine only, and a cluster address checked before Ray is asked.

Why: anyone who reaches a Ray node's ports can run code on it. Started plainly, a local Ray puts
its node on the host's network address, and then every listener follows it: gcs_server, raylet,
the object manager, each worker and the driver on every interface, the RuntimeEnvAgent on the
host address (measured with Ray 2.60 by `tests/test_reliability2_ray.py`). Ray keeps everything
on loopback only when the node address is loopback, and it turns ``_node_ip_address=127.0.0.1``
into the host's address unless it runs as a single machine — its default on macOS and Windows,
its ``ENABLE_RAY_CLUSTER`` switch. `single_machine_ray` sets that switch while ``ray.init`` starts
the local node, and `check_loopback` refuses a node that still ended up elsewhere (a Ray version
that changed this), so a sweep or live run never listens beyond 127.0.0.1 without a word.

A cluster is only ever what the user names with ``--address``; `check_reachable` tries its port
first, because Ray retries an unreachable address for minutes, printing a log line every few
seconds, before it gives up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator

from drivelab.sweep.spec import SweepError

#: Where a local Ray's node, and with it every Ray process's listener, lives.
LOOPBACK = "127.0.0.1"
#: Seconds to wait for a cluster's port to answer.
CONNECT_TIMEOUT_S = 5.0
#: Characters of a user's ``--address`` shown in a message.
SHOWN = 80


@contextlib.contextmanager
def single_machine_ray() -> Iterator[None]:
    """While ``ray.init`` starts a local node: Ray's single-machine mode, so loopback stays loopback."""
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):  # a Ray without the switch: `check_loopback` decides
        yield
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def check_loopback(node_ip: str) -> None:
    """Refuse a local Ray whose node (and so its listeners) is not on a loopback address."""
    import ray

    try:
        loopback = ipaddress.ip_address(node_ip).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SweepError(f"Ray {ray.__version__} put its local node on {node_ip[:SHOWN]}, not {LOOPBACK}: "
                         "drivelab does not run a local Ray the network can reach; use a Ray version "
                         "that keeps it on loopback, or run on a cluster with --address")


def check_reachable(address: str) -> None:
    """Refuse a cluster address that is malformed or whose port does not answer (one line, in seconds)."""
    host, port = split_address(address)
    if host is None or port is None:
        return  # `auto`: Ray finds a cluster started on this machine, or says at once it found none
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return
    except socket.gaierror:
        reason = f"no host named {host[:SHOWN]!r}"
    except TimeoutError:
        reason = f"no answer in {CONNECT_TIMEOUT_S:g} s"
    except (OSError, UnicodeError) as exc:
        reason = (getattr(exc, "strerror", None) or type(exc).__name__).lower()
    raise SweepError(f"cannot reach the Ray cluster at {_shown(address)}: {reason}; check --address (host:port "
                     "of the head's GCS, or ray://host:port) and that the cluster is up")


def split_address(address: str) -> tuple[str | None, int | None]:
    """``host:port``, ``ray://host:port`` or ``[v6]:port`` as (host, port); (None, None) for ``auto``."""
    rest = address.strip()
    if rest.lower() == "auto":
        return None, None
    if "://" in rest:
        rest = rest.split("://", 1)[1]
    host, sep, port = rest.split("/", 1)[0].rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SweepError(f"--address {_shown(address)!r} is not host:port, ray://host:port (a port from 1 "
                         "to 65535) or auto; leave it out for a local Ray on this machine")
    return host, int(port)


def _shown(address: str) -> str:
    return address[:SHOWN] + ("..." if len(address) > SHOWN else "")
