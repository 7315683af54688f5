"""The `eval` verb: closed-loop driving, baselines, videos, offline metrics."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from drivelab.cli.app import FORCE_OPTION, app, err, lazy_progress, out
from drivelab.errors import DrivelabError, Interrupted
from drivelab.outputs import check_output, check_output_dir, write_json
from drivelab.seeds import HELD_OUT_SEED


# --------------------------------------------------------------------------- eval
@app.command("eval")
def eval_(
    run: Annotated[str | None, typer.Argument(help="RUN[@batch]: a run folder or <line>_vN.")] = None,
    episodes: Annotated[int, typer.Option(help="Tracks to drive.")] = 10,
    seed: Annotated[int, typer.Option(help="First track seed (held out from collection's 0..).")] = HELD_OUT_SEED,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    baseline: Annotated[
        list[str] | None, typer.Option(help="Also drive `expert` and/or `random` on the same tracks.")
    ] = None,
    env: Annotated[str, typer.Option(help="Environment.")] = "carracing",
    max_steps: Annotated[int, typer.Option(help="Step cap per track.")] = 1000,
    video: Annotated[Path | None, typer.Option(help="Write one GIF per track here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write rows + aggregates here.")] = None,
    runs: Annotated[Path, typer.Option("--runs", help="Root folder of the model lines.")] = Path("runs"),
    sample: Annotated[bool, typer.Option("--sample", help="Sample classification heads.")] = False,
    convcam: Annotated[
        bool, typer.Option("--convcam", help="Tile the last conv layer's maps beside the --video frames.")
    ] = False,
    offline: Annotated[
        str | None, typer.Option("--offline", help="Score RUN's predictions on this split instead of driving.")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="With --offline: another dataset with the run's signals.")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="With --offline: k of the top-k accuracy (default 5).")
    ] = None,
    group_map: Annotated[
        Path | None,
        typer.Option("--group-map", help='With --offline: JSON {"group": [class ids or names]} merged before scoring.'),
    ] = None,
    precision: Annotated[
        str, typer.Option("--precision", help="Policy arithmetic: 32, bf16 or auto (bf16 where the CPU has AMX/AVX-512 BF16).")
    ] = "32",
    engine: Annotated[
        list[str] | None,
        typer.Option("--engine", help="torch (default) or onnx (the exported graph on onnxruntime); both: side by side."),
    ] = None,
    force: Annotated[bool, FORCE_OPTION] = False,
) -> None:
    """Drive a policy (a run, or an exported FILE.onnx) and/or baselines on held-out tracks."""
    from drivelab.evaluate.drivers import BASELINES, DriverSpec
    from drivelab.evaluate.report import evaluate_many, render_report
    from drivelab.evaluate.runner import video_path
    from drivelab.evaluate.runtime import inference_precision

    if json_out is not None:
        check_output(json_out, "--json", force=force)
    onnx_file = run is not None and run.lower().endswith(".onnx")
    engines = _engines(engine, onnx_file)
    if offline is not None and engines != ["torch"]:
        raise DrivelabError("--offline scores a run with the torch engine: name the RUN, without --engine onnx")
    if offline is not None:
        _eval_offline(run, offline, dataset, runs, workers, json_out,
                      driving_flags=bool(baseline or video or convcam), top_k=top_k, group_map=group_map,
                      force=force)
        return
    if dataset is not None:
        raise DrivelabError("--dataset applies to --offline SPLIT; closed-loop evaluation drives --env")
    if top_k is not None or group_map is not None:
        raise DrivelabError("--top-k and --group-map score classes: use them with --offline SPLIT")
    if run is not None and not onnx_file:
        _refuse_classification_run(run, runs)
    if convcam and video is None:
        raise DrivelabError("--convcam draws into the driving videos: add --video DIR")
    _check_engine_flags(engines, sample, convcam, precision)
    resolved, note = inference_precision(precision)
    if note:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if episodes < 1:
        raise DrivelabError(f"--episodes must be at least 1 (got {episodes})")
    if seed < 0:
        raise DrivelabError(f"--seed must be at least 0 (got {seed})")
    if max_steps < 1:
        raise DrivelabError(f"--max-steps must be at least 1 (got {max_steps})")
    if run is None and engine:
        raise DrivelabError("--engine chooses what runs a policy: name a RUN or FILE.onnx")
    seeds = list(range(seed, seed + episodes))
    with contextlib.ExitStack() as exports:  # a run driven by the onnx engine is exported for it here
        specs = [] if run is None else _policy_specs(run, runs, engines, onnx_file, exports,
                                                      sample=sample, convcam=convcam, precision=resolved)
        for name in baseline or []:
            if name not in BASELINES:
                raise DrivelabError(f"--baseline {name!r} is unknown: use {' or '.join(BASELINES)}")
            specs.append(DriverSpec(name))
        if not specs:
            raise DrivelabError("name a RUN to evaluate, or --baseline expert|random")
        if video is not None:  # every GIF name is known now: refuse before the first track is driven
            check_output_dir(video, "--video")
            for spec in specs:
                for s in seeds:
                    check_output(video_path(video, spec, s), "--video", (".gif",), force=force)
        with lazy_progress(episodes * len(specs), "eval", unit="tracks") as on_progress:
            reports = evaluate_many(specs, seeds, env=env, workers=workers, max_steps=max_steps,
                                    video_dir=video, on_progress=on_progress, replace_videos=force)
    render_report(out, reports)
    if any(r.interrupted for r in reports):
        driven = sum(len(r.rows) for r in reports)
        raise Interrupted(f"{driven} of {episodes * len(specs)} tracks driven: the table above is partial, "
                          "nothing was saved (rerun to get complete results)")
    if json_out is not None:
        write_json(json_out, {"tracks": seeds, "drivers": [r.to_dict() for r in reports]},
                   force=force, flag="--json")
        out.print(f"results -> {json_out}", markup=False, highlight=False)
    incomplete = [r.driver for r in reports if not r.complete]
    if run is not None and not onnx_file and not incomplete:  # kept with the run for `runs`, its card
        from drivelab.runs.evals import save_run_eval

        saved = save_run_eval(run, runs, {"env": env, "max_steps": max_steps, "tracks": seeds,
                                          "drivers": [r.to_dict() for r in reports]})
        out.print(f"kept with the run -> {saved}", markup=False, highlight=False)
    if incomplete:
        raise DrivelabError(f"evaluation incomplete for {', '.join(incomplete)} (failed or interrupted episodes)")


def _engines(engine: list[str] | None, onnx_file: bool) -> list[str]:
    """The engines asked for, in order, once each; a FILE.onnx runs on the onnx engine only."""
    from drivelab.evaluate.drivers import ENGINES

    names = list(dict.fromkeys(engine or (["onnx"] if onnx_file else ["torch"])))
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise DrivelabError(f"--engine {unknown[0]!r} is unknown: use {' or '.join(ENGINES)}")
    if onnx_file and "torch" in names:
        raise DrivelabError("a .onnx file runs on the onnx engine: drop --engine torch, or name the RUN")
    return names


def _check_engine_flags(engines: list[str], sample: bool, convcam: bool, precision: str) -> None:
    if "onnx" in engines and (sample or convcam):
        raise DrivelabError("--sample and --convcam need the torch policy (the ONNX graph answers the "
                            "argmax bin and keeps no feature maps): use --engine torch")
    if "torch" not in engines and precision != "32":
        raise DrivelabError("--precision applies to the torch engine; the onnx engine computes in fp32")


def _policy_specs(
    run: str, runs: Path, engines: list[str], onnx_file: bool, exports: contextlib.ExitStack,
    **options: Any,
) -> list[Any]:
    """One driver per engine for ``run``; a run on the onnx engine is exported for it first."""
    from drivelab.evaluate.drivers import DriverSpec

    specs = []
    for name in engines:
        target = run if onnx_file or name == "torch" else _export_for_eval(run, runs, exports)
        specs.append(DriverSpec("policy", run=target, runs_root=str(runs), engine=name, **options))
    return specs


def _export_for_eval(run: str, runs: Path, exports: contextlib.ExitStack) -> str:
    """Export ``run`` (parity checked) into a temporary folder that lives as long as ``exports``."""
    from drivelab.export import ExportRequest, export_run
    from drivelab.runs.folder import resolve_checkpoint

    folder, batch, _ = resolve_checkpoint(run, runs)
    where = Path(exports.enter_context(tempfile.TemporaryDirectory(prefix="drivelab-onnx-")))
    result = export_run(ExportRequest(ref=run, runs_root=runs, out=where / f"{folder.name}@{batch}.onnx"))
    worst = max(result.parity.worst().values())
    err.print(f"note: exported {result.card.run} for the onnx engine (parity max |diff| {worst:.1e} on "
              f"{result.parity.frames} frames)", markup=False, highlight=False, soft_wrap=True)
    return str(result.path)


def _eval_offline(
    run: str | None,
    split: str,
    dataset: Path | None,
    runs: Path,
    workers: int,
    json_out: Path | None,
    driving_flags: bool,
    top_k: int | None = None,
    group_map: Path | None = None,
    force: bool = False,
) -> None:
    """`eval RUN --offline SPLIT`: per-output metrics of the run's predictions on recorded data."""
    from drivelab.evaluate.classification import DEFAULT_TOP_K
    from drivelab.evaluate.offline import OfflineJob, render_offline

    if run is None:
        raise DrivelabError("--offline scores a policy: name a RUN")
    if driving_flags:
        raise DrivelabError("--offline scores recorded samples: drop --baseline, --video and --convcam")
    job = OfflineJob(run, split, dataset=dataset, runs_root=runs, workers=workers,
                     top_k=top_k or DEFAULT_TOP_K, group_map=group_map)
    if json_out is not None:  # the confusion PNGs beside --json: checked before scoring
        for head in job.runtime.config.model.heads:
            if head.kind != "regression":
                check_output(confusion_beside(json_out, head.output), "--json", (".png",), force=force)
    with lazy_progress(len(job.batches), "offline", unit="batches") as on_progress:
        report = job.run(on_progress)
    render_offline(out, report)
    if report.classification:
        _save_classification(report, run, runs, split, dataset, group_map, json_out, force)
    if json_out is not None:
        write_json(json_out, report.to_dict(), force=force, flag="--json")
        out.print(f"results -> {json_out}", markup=False, highlight=False)


def confusion_beside(json_out: Path, output: str) -> Path:
    """The confusion PNG written next to ``--json FILE`` for one categorical head."""
    return json_out.with_name(f"{json_out.stem}_confusion_{output}.png")


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


def _save_classification(
    report: object, run: str, runs: Path, split: str, dataset: Path | None, group_map: Path | None,
    json_out: Path | None,
    force: bool = False,
) -> None:
    """Keep the metrics (JSON) and confusion PNGs with the run, and beside ``--json`` when given.

    The run keeps every offline evaluation: a repeat gets a new folder (``..._2``), never
    replacing the earlier one.
    """
    from drivelab.evaluate.classification import save_confusion_png
    from drivelab.evaluate.offline import OfflineReport
    from drivelab.runs.folder import resolve_checkpoint

    if not isinstance(report, OfflineReport):
        raise TypeError(f"expected an OfflineReport, got {type(report).__name__}")
    folder, batch, _ = resolve_checkpoint(run, runs)
    name = f"offline_{split}_batch{batch}"
    if dataset is not None:
        name += f"_{Path(dataset).stem}"
    if group_map is not None:
        name += f"_groups-{group_map.stem}"
    beside = {o: confusion_beside(json_out, o) for o in report.classification} if json_out is not None else {}
    target = folder.path / "eval" / name
    repeat = 1
    while target.exists():
        repeat += 1
        target = folder.path / "eval" / f"{name}_{repeat}"
    target.mkdir(parents=True)
    write_json(target / "offline.json", report.to_dict())
    for output, classes in report.classification.items():
        title = f"{report.run} on {split}: {output}"
        save_confusion_png(classes, target / f"confusion_{output}.png", title)
        if output in beside:
            save_confusion_png(classes, beside[output], title, force=force)
    out.print(f"classification metrics + confusion PNG -> {target}", markup=False, highlight=False)


