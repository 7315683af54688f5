"""`diagnose`: a run's checkpoint through the four tests, checked up front, one report out.

Everything that can refuse (the run and checkpoint, the split, the tracks, the thresholds, the
output files) is checked before any sample is read, so a mistake costs one line and no time.
The run is opened by the offline evaluator (`OfflineJob`: the run's runtime, its dataset, the
fit check and the split check), which is also where the samples' layout comes from.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from drivelab.config import load_config
from drivelab.config.diagnose_section import DiagnoseConfig
from drivelab.diagnose.closed_loop import ab_overrides, closed_loop_ab
from drivelab.diagnose.forward import Forward, run_policy
from drivelab.diagnose.inertia import InertiaReport, inertia_track
from drivelab.diagnose.probe import copy_baseline, previous_action_probe
from drivelab.diagnose.reliance import input_reliance
from drivelab.diagnose.report import DiagnosisReport, check_outputs
from drivelab.diagnose.request import DiagnoseRequest
from drivelab.diagnose.samples import blank_frames, load_split
from drivelab.diagnose.verdict import verdicts
from drivelab.errors import DrivelabError
from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.offline import OfflineJob
from drivelab.runs.folder import resolve_checkpoint
from drivelab.runs.world import check_same_world, recorded_env
from drivelab.seeds import DEFAULT_ENV, HELD_OUT_SEED


class DiagnoseError(DrivelabError):
    """A run, split, track range or threshold `drivelab diagnose` cannot work with."""


def _thresholds(request: DiagnoseRequest) -> DiagnoseConfig:
    run, _, _ = resolve_checkpoint(request.ref, request.runs_root)
    bad = [t for t in request.thresholds if not t.startswith("diagnose.")]
    if bad:
        raise DiagnoseError(f"--set {bad[0]!r}: thresholds are diagnose.<key>=value (e.g. diagnose.frames_share_min=0.4)")
    return load_config(run.config_path, request.thresholds).diagnose


def _check(request: DiagnoseRequest) -> None:
    if request.tracks < 0 or (request.inertia_tracks is not None and request.inertia_tracks < 0):
        raise DiagnoseError(f"--tracks must be 0 or more (got {request.tracks})")
    if request.tracks and request.seed < HELD_OUT_SEED:
        raise DiagnoseError(f"--seed {request.seed}: closed-loop tracks must be held out, seed {HELD_OUT_SEED} or above "
                            "(lower seeds are the collection's tracks)")
    if request.max_steps < 1:
        raise DiagnoseError(f"--max-steps must be at least 1 (got {request.max_steps})")


def _check_finite(forward: Forward, label: str, split: str) -> None:
    """A policy that answers NaN or inf has no reliance to measure: every figure would be NaN
    and every threshold comparison false, which reads as a verdict. Refuse in one line."""
    for output, values in forward.predictions.items():
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            raise DiagnoseError(f"{label} answers NaN or inf for {output!r} on {bad} of {len(values)} "
                                f"{split} samples: there is nothing to diagnose; check the checkpoint "
                                "(an earlier one: RUN@N)")


def diagnose(request: DiagnoseRequest, on_stage: Callable[[str], None] | None = None) -> DiagnosisReport:
    """Run every test on ``request.ref`` and return the report (saving is the caller's).

    ``on_stage`` hears each test as it starts: the closed-loop part takes minutes, and a verb
    that sits silent that long looks hung.
    """
    stage = on_stage or (lambda _text: None)
    _check(request)
    config = _thresholds(request)
    job = OfflineJob(request.ref, request.split, request.dataset, request.runs_root, device=request.device)
    train_job = OfflineJob(request.ref, job.runtime.config.data.train_split, request.dataset, request.runs_root,
                           device=request.device)
    env = _world(request, job)
    check_outputs(request)
    if job.runtime.kind.stateful:
        raise DiagnoseError(f"{job.runtime.label} carries state between steps (model.kind "
                            f"{job.runtime.kind.name}): diagnose permutes samples across "
                            "the split, which breaks the carried state; diagnose a frame-by-frame policy")
    started = time.perf_counter()
    runtime, heads = job.runtime, job.objective.heads
    outputs = [h.output for h in heads]
    val = load_split(job.samples, outputs)
    train = load_split(train_job.samples, outputs, config.probe_max_samples)
    blank = blank_frames(train)
    val_pass = run_policy(runtime, val.batch, job.device, features=True)
    _check_finite(val_pass, runtime.label, request.split)  # a broken checkpoint: one line, before any stage
    stage(f"input reliance on {len(val)} {request.split} samples ({config.bootstrap} bootstrap draws)")
    torch.manual_seed(0)
    reliance = input_reliance(runtime, heads, val, blank, job.device, config.bootstrap)
    stage(f"previous-action probe on {len(train)} training samples")
    probe = previous_action_probe(run_policy(runtime, train.batch, job.device, features=True), train,
                                  val_pass, val, config.probe_ridge)
    copies = copy_baseline(heads, val_pass, val, set(runtime.processor.targets.delta))
    offline_s = time.perf_counter() - started
    ab = inertia = None
    history_mean = np.asarray(runtime.processor.history.mean, np.float32) if runtime.processor.history.signals else None
    if request.tracks:
        tracks = list(range(request.seed, request.seed + request.tracks))
        ab = closed_loop_ab(request.ref, str(request.runs_root), env, tracks, request.max_steps, request.workers,
                            ab_overrides(blank, history_mean), stage)
        inertia = _inertia(request, env, config, stage)
    actions = sorted(s.name for s in job.store.meta.actions)
    found = verdicts(reliance, copies, probe, set(actions), ab, inertia, config)
    return DiagnosisReport(runtime.label, str(job.store.path), request.split, len(val), reliance, probe, copies,
                           ab, inertia, found, config, offline_s, actions)


def _world(request: DiagnoseRequest, job: OfflineJob) -> str:
    """The env of the closed-loop tests: the run's world (`drivelab.runs.world`), else its
    data's; a ``--dataset`` of another world than the run's is refused naming both."""
    run, _, _ = resolve_checkpoint(request.ref, request.runs_root)
    trained, data_env = recorded_env(run), job.store.meta.world_name()
    if request.dataset is not None and data_env is not None:
        check_same_world(trained, data_env, run.name, f"--dataset {request.dataset}")
    return trained or data_env or DEFAULT_ENV


def _inertia(request: DiagnoseRequest, env: str, config: DiagnoseConfig,
             stage: Callable[[str], None]) -> InertiaReport:
    n = request.tracks if request.inertia_tracks is None else request.inertia_tracks
    spec = DriverSpec("policy", request.ref, str(request.runs_root))
    started = time.perf_counter()
    rows = []
    for k, seed in enumerate(range(request.seed, request.seed + n), start=1):
        stage(f"inertia: standing start and stops on track {seed} ({k}/{n})")
        rows.append(inertia_track(env, spec, seed, config))
    return InertiaReport(rows, (time.perf_counter() - started) / max(n, 1))
