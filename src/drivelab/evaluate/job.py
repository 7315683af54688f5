"""`drivelab eval` as one job: the request checked up front, the engines, the drive or the
offline scoring, and what is kept (``--json``, the run's own ``eval/``).

The verb parses flags into an `EvalRequest`, calls `drive` or `score_offline`, prints the table,
and prints each file `keep_drive` / `keep_offline` reports as written; everything that decides
(which engines, exporting a run for the onnx engine, which files, refusing a mistake) is here,
so another caller (a study, a test) gets the same answers without the CLI. Every refusal happens
before the first track is driven or the first batch scored.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivelab.errors import DrivelabError, Interrupted
from drivelab.evaluate.drivers import BASELINES, ENGINES, DriverSpec
from drivelab.evaluate.offline import OfflineReport
from drivelab.evaluate.runner import EvalReport
from drivelab.outputs import check_output, check_output_dir, is_stdout, write_json
from drivelab.seeds import DEFAULT_ENV, HELD_OUT_SEED

ProgressFn = Callable[[int, int, int], None]
#: ``progress(total, label, unit=...)``: a context that yields the callback work reports to.
Progress = Callable[..., contextlib.AbstractContextManager[ProgressFn]]
Note = Callable[[str], None]


@dataclass(frozen=True)
class EvalRequest:
    """What `drivelab eval` was asked: one field per flag, as given."""

    run: str | None = None
    episodes: int = 10
    seed: int = HELD_OUT_SEED
    workers: int = 2
    baseline: tuple[str, ...] = ()
    #: None: the world the run was trained in (`drivelab.runs.world`), CarRacing without a run
    env: str | None = None
    max_steps: int = 1000
    video: Path | None = None
    json_out: Path | None = None
    runs_root: Path = Path("runs")
    sample: bool = False
    convcam: bool = False
    offline: str | None = None
    dataset: Path | None = None
    top_k: int | None = None
    group_map: Path | None = None
    precision: str = "32"
    engine: tuple[str, ...] = ()
    force: bool = False

    @property
    def onnx_file(self) -> bool:
        """The run is an exported FILE.onnx, not a run folder."""
        return self.run is not None and self.run.lower().endswith(".onnx")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))


@dataclass(frozen=True)
class DriveOutcome:
    """The reports of one closed-loop evaluation and how many tracks were planned."""

    reports: list[EvalReport]
    planned: int

    @property
    def incomplete(self) -> list[str]:
        return [r.driver for r in self.reports if not r.complete]

    def check_complete(self) -> None:
        """Raise the one-line error of an evaluation with failed or interrupted episodes."""
        if self.incomplete:
            raise DrivelabError(f"evaluation incomplete for {', '.join(self.incomplete)} "
                                "(failed or interrupted episodes)")


# --------------------------------------------------------------------------- checks
def engines_for(request: EvalRequest) -> list[str]:
    """Check the flags every eval shares and return the engines asked for, in order, once each;
    a FILE.onnx runs on the onnx engine only."""
    if request.json_out is not None:
        check_output(request.json_out, "--json", force=request.force)
    names = list(dict.fromkeys(request.engine or (["onnx"] if request.onnx_file else ["torch"])))
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise DrivelabError(f"--engine {unknown[0]!r} is unknown: use {' or '.join(ENGINES)}")
    if request.onnx_file and "torch" in names:
        raise DrivelabError("a .onnx file runs on the onnx engine: drop --engine torch, or name the RUN")
    if request.offline is not None and names != ["torch"]:
        raise DrivelabError("--offline scores a run with the torch engine: name the RUN, without --engine onnx")
    return names


def _check_drive(request: EvalRequest, engines: list[str]) -> None:
    """Flags that make no sense for a closed-loop evaluation, refused before any track."""
    if request.dataset is not None:
        raise DrivelabError("--dataset applies to --offline SPLIT; closed-loop evaluation drives --env")
    if request.top_k is not None or request.group_map is not None:
        raise DrivelabError("--top-k and --group-map score classes: use them with --offline SPLIT")
    if request.run is not None and not request.onnx_file:
        _refuse_classification_run(request.run, request.runs_root)
    if request.convcam and request.video is None:
        raise DrivelabError("--convcam draws into the driving videos: add --video DIR")
    if "onnx" in engines and (request.sample or request.convcam):
        raise DrivelabError("--sample and --convcam need the torch policy (the ONNX graph answers the "
                            "argmax bin and keeps no feature maps): use --engine torch")
    if "torch" not in engines and request.precision != "32":
        raise DrivelabError("--precision applies to the torch engine; the onnx engine computes in fp32")


def _check_tracks(request: EvalRequest) -> None:
    for flag, value, least in (("--episodes", request.episodes, 1), ("--seed", request.seed, 0),
                               ("--max-steps", request.max_steps, 1)):
        if value < least:
            raise DrivelabError(f"{flag} must be at least {least} (got {value})")
    if request.run is None and request.engine:
        raise DrivelabError("--engine chooses what runs a policy: name a RUN or FILE.onnx")


def _refuse_classification_run(run: str, runs: Path) -> None:
    """A classification run has no actions to drive with: point at offline scoring instead."""
    from drivelab.config import load_config
    from drivelab.runs.folder import resolve_checkpoint

    folder, _, _ = resolve_checkpoint(run, runs)
    if load_config(folder.config_path).task == "classification":
        raise DrivelabError(
            f"{folder.name} is a classification run (task: classification), it cannot drive: "
            "score it with `drivelab eval RUN --offline test`"
        )


# --------------------------------------------------------------------------- closed loop
def drive(request: EvalRequest, progress: Progress, note: Note) -> DriveOutcome:
    """Drive the run (on each engine asked for) and the baselines on the held-out tracks."""
    from drivelab.evaluate.report import evaluate_many
    from drivelab.evaluate.runner import video_path
    from drivelab.evaluate.runtime import inference_precision

    engines = engines_for(request)
    _check_drive(request, engines)
    env = drive_env(request)
    resolved, said = inference_precision(request.precision)
    if said:
        note(said)
    _check_tracks(request)
    seeds = request.seeds
    baselines = _baselines(request.baseline)  # a typo is refused before a run is exported
    with contextlib.ExitStack() as exports:  # a run driven by the onnx engine is exported for it here
        specs = [] if request.run is None else _policy_specs(request, engines, exports, note, resolved)
        specs += baselines
        if not specs:
            raise DrivelabError("name a RUN to evaluate, or --baseline expert|random")
        if request.video is not None:  # every video's name is known now: refuse before the first track
            check_output_dir(request.video, "--video")
            for spec in specs:
                for s in seeds:
                    check_output(video_path(request.video, spec, s), "--video", (".mp4",), force=request.force)
        with progress(request.episodes * len(specs), "eval", unit="tracks") as on_progress:
            reports = evaluate_many(specs, seeds, env=env, workers=request.workers,
                                    max_steps=request.max_steps, video_dir=request.video,
                                    on_progress=on_progress, replace_videos=request.force)
    return DriveOutcome(reports, request.episodes * len(specs))


def drive_env(request: EvalRequest) -> str:
    """The env to drive in: ``--env`` if given (refused for a run of another world), else the
    world the run (or the exported file's run) was trained in, else `DEFAULT_ENV`."""
    from drivelab.runs.world import env_for, recorded_env

    if request.run is None:
        return request.env or DEFAULT_ENV
    if request.onnx_file:
        from drivelab.export.engine import OnnxRuntime

        path = Path(request.run)
        card = OnnxRuntime(path).card if path.is_file() else None  # a missing file: refused later
        return env_for(card.env if card else None, request.env, path.name)
    from drivelab.runs.folder import resolve_checkpoint

    folder, _, _ = resolve_checkpoint(request.run, request.runs_root)
    return env_for(recorded_env(folder), request.env, folder.name)


def _baselines(names: tuple[str, ...]) -> list[DriverSpec]:
    for name in names:
        if name not in BASELINES:
            raise DrivelabError(f"--baseline {name!r} is unknown: use {' or '.join(BASELINES)}")
    return [DriverSpec(name) for name in names]


def _policy_specs(request: EvalRequest, engines: list[str], exports: contextlib.ExitStack, note: Note,
                  precision: Any) -> list[DriverSpec]:
    """One driver per engine for the run; a run on the onnx engine is exported for it first."""
    assert request.run is not None
    specs = []
    for name in engines:
        target = request.run if request.onnx_file or name == "torch" else _export_for_eval(request, exports, note)
        specs.append(DriverSpec("policy", run=target, runs_root=str(request.runs_root), engine=name,
                                sample=request.sample, convcam=request.convcam, precision=precision))
    return specs


def _export_for_eval(request: EvalRequest, exports: contextlib.ExitStack, note: Note) -> str:
    """Export the run (parity checked) into a temporary folder that lives as long as ``exports``."""
    from drivelab.export import ExportRequest, export_run
    from drivelab.runs.folder import resolve_checkpoint

    assert request.run is not None
    folder, batch, _ = resolve_checkpoint(request.run, request.runs_root)
    where = Path(exports.enter_context(tempfile.TemporaryDirectory(prefix="drivelab-onnx-")))
    result = export_run(ExportRequest(ref=request.run, runs_root=request.runs_root,
                                      out=where / f"{folder.name}@{batch}.onnx"))
    worst = max(result.parity.worst().values())
    note(f"exported {result.card.run} for the onnx engine (parity max |diff| {worst:.1e} on "
         f"{result.parity.frames} frames)")
    return str(result.path)


def keep_drive(request: EvalRequest, outcome: DriveOutcome) -> Iterator[tuple[str, Path]]:
    """Write ``--json`` and the run's own copy; yields (what, where) as each file lands.

    A partial evaluation (Ctrl-C) saves nothing: `Interrupted` says so.
    """
    reports = outcome.reports
    if any(r.interrupted for r in reports):
        driven = sum(len(r.rows) for r in reports)
        raise Interrupted(f"{driven} of {outcome.planned} tracks driven: the table above is partial, "
                          "nothing was saved (rerun to get complete results)")
    drivers = [r.to_dict() for r in reports]
    if request.json_out is not None:
        yield "results", write_json(request.json_out, {"tracks": request.seeds, "drivers": drivers},
                                    force=request.force, flag="--json")
    if request.run is not None and not request.onnx_file and not outcome.incomplete:
        from drivelab.runs.evals import save_run_eval  # kept with the run for `runs`, its card

        yield "kept with the run", save_run_eval(request.run, request.runs_root, {
            "env": reports[0].env if reports else request.env, "max_steps": request.max_steps, "tracks": request.seeds, "drivers": drivers})


# --------------------------------------------------------------------------- offline
def confusion_beside(json_out: Path, output: str) -> Path:
    """The confusion PNG written next to ``--json FILE`` for one categorical head."""
    return json_out.with_name(f"{json_out.stem}_confusion_{output}.png")


def score_offline(request: EvalRequest, progress: Progress) -> OfflineReport:
    """`eval RUN --offline SPLIT`: per-output metrics of the run's predictions on recorded data."""
    from drivelab.evaluate.classification import DEFAULT_TOP_K
    from drivelab.evaluate.offline import OfflineJob

    engines_for(request)
    if request.run is None:
        raise DrivelabError("--offline scores a policy: name a RUN")
    if request.baseline or request.video or request.convcam:
        raise DrivelabError("--offline scores recorded samples: drop --baseline, --video and --convcam")
    assert request.offline is not None
    job = OfflineJob(request.run, request.offline, dataset=request.dataset, runs_root=request.runs_root,
                     workers=request.workers, top_k=request.top_k or DEFAULT_TOP_K, group_map=request.group_map)
    if request.json_out is not None and not is_stdout(request.json_out):  # the confusion PNGs beside --json
        for head in job.runtime.config.model.heads:
            if head.kind != "regression":
                check_output(confusion_beside(request.json_out, head.output), "--json", (".png",),
                             force=request.force)
    with progress(len(job.batches), "offline", unit="batches") as on_progress:
        return job.run(on_progress)


def keep_offline(request: EvalRequest, report: OfflineReport) -> Iterator[tuple[str, Path]]:
    """Keep the class heads' metrics and confusion PNGs with the run (a new ``eval/`` folder,
    `drivelab.runs.evals`) and beside ``--json``, then ``--json`` itself; yields as each lands."""
    from drivelab.evaluate.classification import save_confusion_png
    from drivelab.runs.evals import offline_confusion, save_offline_eval
    from drivelab.runs.folder import resolve_checkpoint

    assert request.run is not None and request.offline is not None
    if report.classification:
        run, batch, _ = resolve_checkpoint(request.run, request.runs_root)
        target = save_offline_eval(run, batch, request.offline, request.dataset, request.group_map,
                                   report.to_dict())
        for output, classes in report.classification.items():
            title = f"{report.run} on {request.offline}: {output}"
            save_confusion_png(classes, offline_confusion(target, output), title)
            if request.json_out is not None and not is_stdout(request.json_out):
                save_confusion_png(classes, confusion_beside(request.json_out, output), title, force=request.force)
        yield "classification metrics + confusion PNG", target
    if request.json_out is not None:
        yield "results", write_json(request.json_out, report.to_dict(), force=request.force, flag="--json")
