"""How trials share cores: a thread count from the trial's cpus, and OpenMP threads that sleep.

Measured on a 2-core machine (the brief's figures): the trainer alone 935 samples/s; next to one
busy process 312 with OpenMP's default wait policy — its threads spin on cores the neighbour
needs — and 517 with ``OMP_WAIT_POLICY=PASSIVE``. So every Ray worker starts with a passive wait
policy (it must be in the environment before the OpenMP runtime loads, hence `worker_env` goes
into ``ray.init(runtime_env=...)``), and each trial runs as many intra-op threads as the cores it
reserved (`apply_trial_threads`). `benchmarks/sweep.py` measures both.

Ray also lowers its workers' priority: every worker process starts at niceness 15 (Ray's
``worker_niceness`` setting), so a trial yields its core to *any* other process — measured here,
a 12-trial study took 389 s per trial next to two niced helper jobs instead of 170 s. A sweep is
the main job, so a local Ray starts its workers at the normal priority (`ray_system_config`);
on a cluster, start each node with ``RAY_worker_niceness=0 ray start ...`` for the same effect.
"""

from __future__ import annotations

import math
import os


def trial_threads(cpus: float) -> int:
    """Intra-op threads for a trial that reserved ``cpus`` cores (a fraction still gets one)."""
    return max(1, math.floor(cpus))


def worker_env(cpus: float) -> dict[str, str]:
    """Environment of every Ray worker process: thread pools sized to the trial, passive waits."""
    threads = str(trial_threads(cpus))
    return {
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "SDL_VIDEODRIVER": os.environ.get("SDL_VIDEODRIVER", "dummy"),
    }


def ray_system_config() -> dict[str, int]:
    """Ray settings for a locally started Ray: workers at the normal priority (niceness 0)."""
    return {"worker_niceness": 0}


def apply_trial_threads(cpus: float) -> int:
    """Set torch's intra-op pool to the trial's cores (Ray's OMP_NUM_THREADS may be unset)."""
    import torch

    threads = trial_threads(cpus)
    torch.set_num_threads(threads)
    return threads
