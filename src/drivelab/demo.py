"""`drivelab demo`: the main job end to end on the embedded defaults.

collect expert data (with DART noise) -> train the default policy -> drive it on held-out tracks
next to the expert -> write a short report. Each stage calls the same library function as its own
verb, so the demo doubles as a worked example. Every run gets its own time-stamped folder:
running the demo twice never overwrites anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivelab.config import load_config
from drivelab.config.shipped import SHIPPED_DIR
from drivelab.data.collect import CollectPlan, CollectSummary, collect
from drivelab.data.inspect import dataset_info, plot_histograms, verify_dataset
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError, Interrupted
from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.report import evaluate_many
from drivelab.evaluate.runner import EvalReport
from drivelab.outputs import check_output_dir, write_text
from drivelab.runs.evals import save_run_eval
from drivelab.seeds import COLLECTION_SEED, DEFAULT_ENV, HELD_OUT_SEED
from drivelab.sim import canonical_env
from drivelab.train import train
from drivelab.train.loop import ProgressSink

#: the shipped demo config (package data, so an installed wheel has it too)
DEFAULT_CONFIG = SHIPPED_DIR / "carracing" / "pilotnet.yaml"


def default_config(env: str) -> Path:
    """The demo's config for ``env``: the traffic scenario's own (frames + route command), else
    CarRacing's PilotNet."""
    from drivelab.sim.traffic_options import SCENARIOS, split_name_head

    head = split_name_head(env)
    return SHIPPED_DIR / "traffic" / f"{head}_pilotnet.yaml" if head in SCENARIOS else DEFAULT_CONFIG


@dataclass(frozen=True)
class DemoOptions:
    out: Path
    episodes: int = 32
    workers: int = 2
    seed: int = COLLECTION_SEED
    noise: float = 0.03
    max_steps: int = 1000
    batches: int | None = None  # None: the config's train.max_batches
    eval_episodes: int = 10
    config: Path = DEFAULT_CONFIG
    overrides: tuple[str, ...] = ()
    #: `--dagger`: DAgger rounds after behaviour cloning (0: the plain demo)
    dagger_rounds: int = 0
    #: the world: CarRacing, or a traffic scenario (``intersection[:options]``)
    env: str = DEFAULT_ENV


@dataclass
class DemoResult:
    folder: Path
    dataset: Path
    histogram: Path
    collect: CollectSummary
    info: dict[str, Any]
    run: Path | None = None
    train_values: dict[str, float] = field(default_factory=dict)
    reports: list[EvalReport] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None
    run_eval: Path | None = None  # the evaluation as kept in the run folder (eval/closed_loop_*.json)


def new_demo_folder(root: Path) -> Path:
    """A fresh folder under ``root`` named by the start time."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = root / f"demo-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = root / f"demo-{stamp}-{n}"
    folder.mkdir(parents=True)
    return folder


def _check_flags(options: DemoOptions) -> None:
    """Every flag is checked before the demo folder exists, and named as the user typed it."""
    for flag, value, low in (("--batches", options.batches, 1), ("--workers", options.workers, 1),
                             ("--seed", options.seed, 0), ("--max-steps", options.max_steps, 1)):
        if value is not None and value < low:
            raise DrivelabError(f"{flag} must be at least {low} (got {value})")
    if not 0.0 <= options.noise <= 1.0:
        raise DrivelabError(f"--noise is a probability in [0, 1] (got {options.noise})")
    if options.dagger_rounds < 0:
        raise DrivelabError(f"--dagger-rounds must be at least 0 (got {options.dagger_rounds})")


def run_demo(
    options: DemoOptions,
    on_stage: Callable[[str], None] | None = None,
    on_collect: Callable[[int, int, int], None] | None = None,
    train_progress: ProgressSink | None = None,
    on_eval: Callable[[int, int, int], None] | None = None,
) -> DemoResult:
    """Run every stage; ``on_stage`` announces each, the others report progress within it."""
    if options.episodes < 3:
        raise DrivelabError("--episodes must be at least 3 (training needs train and val episodes)")
    if options.eval_episodes < 1:
        raise DrivelabError("--eval-episodes must be at least 1")
    _check_flags(options)
    check_output_dir(options.out, "--out")
    canonical_env(options.env)  # a bad scenario or option: one line before the demo folder exists
    overrides = list(options.overrides)
    if options.batches is not None:
        overrides.append(f"train.max_batches={options.batches}")
    config = load_config(options.config, overrides)  # config mistakes fail before any work
    stage = on_stage or (lambda _name: None)
    times: dict[str, float] = {}
    started = time.perf_counter()
    folder = new_demo_folder(options.out)
    dataset = folder / "data.zarr"

    stage("collect")
    t0 = time.perf_counter()
    summary = collect(
        dataset,
        CollectPlan(env=options.env, seed=options.seed, noise=options.noise, max_steps=options.max_steps),
        episodes=options.episodes,
        workers=options.workers,
        val_episodes=max(1, options.episodes // 8),
        on_progress=on_collect,
    )
    store = DatasetStore.open(dataset)
    report = verify_dataset(store)
    if not report.ok:
        raise DrivelabError(f"the demo dataset failed verification: {report.problems[0]}")
    histogram = plot_histograms(store, folder / "histograms.png")
    times["collect"] = time.perf_counter() - t0
    result = DemoResult(folder, dataset, histogram, summary, dataset_info(store), stage_seconds=times)

    stage("train")
    t0 = time.perf_counter()
    config = load_config(options.config, [*overrides, f"data.path={dataset}"])
    trained = train(config, runs_root=folder / "runs", progress=train_progress)
    times["train"] = time.perf_counter() - t0
    result.run = trained.run.path
    result.train_values = {**trained.train_values, **trained.val_values}
    if options.dagger_rounds:
        stage("dagger")
        t0 = time.perf_counter()
        result.run = demo_dagger(config, options, folder / "runs", trained.run.path)
        times["dagger"] = time.perf_counter() - t0

    stage("evaluate")
    t0 = time.perf_counter()
    seeds = list(range(HELD_OUT_SEED, HELD_OUT_SEED + options.eval_episodes))
    specs = [DriverSpec("policy", run=str(result.run)), DriverSpec("expert")]
    result.reports = evaluate_many(specs, seeds, env=options.env, workers=options.workers, max_steps=options.max_steps,
                                   on_progress=on_eval)
    times["evaluate"] = time.perf_counter() - t0
    if any(r.interrupted for r in result.reports):
        raise Interrupted(f"during the evaluation: the dataset and the trained run are kept in {folder}; "
                          f"evaluate again with `drivelab eval {result.run} --baseline expert`")
    # kept with the run too, as `drivelab eval RUN` keeps it: `runs` and the card show it
    result.run_eval = save_run_eval(str(result.run), folder / "runs", {
        "env": options.env, "max_steps": options.max_steps, "tracks": seeds,
        "drivers": [r.to_dict() for r in result.reports]})
    times["total"] = time.perf_counter() - started  # the stages plus checks, histograms, saving
    result.report_path = write_report(result, options)
    return result


def phase_times(seconds: dict[str, float]) -> str:
    """``collect 1:02, train 0:31, evaluate 0:45, total 2:30``: where a demo's minutes went."""
    return ", ".join(f"{name} {int(s // 60)}:{int(s % 60):02d}" for name, s in seconds.items())


def demo_dagger(config: Any, options: DemoOptions, runs_root: Path, bc_run: Path) -> Path:
    """DAgger rounds on top of the behaviour-cloning run: a quarter of the episodes and batches each.

    Each round drives ``episodes // 4`` new tracks with the expert/policy mixture (β halves per
    round), the expert labelling every frame, and trains a quarter of the batches more over
    everything collected (`drivelab.live.dagger`).
    """
    from drivelab.config.live_section import LiveConfig, StopConfig
    from drivelab.live.dagger import run_dagger

    live = LiveConfig(env=options.env, seed=options.seed, max_steps=options.max_steps, noise=options.noise,
                      round_episodes=max(1, options.episodes // 4),
                      round_batches=max(1, config.train.max_batches // 4), stop=StopConfig(batches=1))
    summary = run_dagger(config.model_copy(update={"live": live}), runs_root, options.dagger_rounds,
                         say=lambda _line: None, start_run=bc_run)
    return Path(summary["run"])


def write_report(result: DemoResult, options: DemoOptions) -> Path:
    """``report.md`` + ``report.json`` in the demo folder: what was done and how well it drives."""
    lines = [
        f"# drivelab demo — {result.folder.name}",
        "",
        f"- dataset: `{result.dataset}` — {result.info['episodes']} expert episodes, "
        f"{result.info['frames']} frames, DART noise {options.noise}",
        f"- policy: `{result.run}` (config `{options.config.name}`"
        + (f", then {options.dagger_rounds} DAgger rounds" if options.dagger_rounds else "") + ")",
        f"- evaluation: {options.eval_episodes} held-out tracks (seeds {HELD_OUT_SEED}..) of "
        f"`{options.env}`, same tracks for policy and expert",
        "",
    ]
    lines += _result_table(result.reports)
    ratio = result.reports[0].aggregate.get("score_ratio_to_expert") if result.reports else None
    if ratio is not None:
        lines += ["", f"Policy driving score / expert driving score: **{ratio:.3f}**"]
    lines += ["", "Stage times (m:ss): " + phase_times(result.stage_seconds),
              "", "![histograms](histograms.png)", ""]
    path = write_text(result.folder / "report.md", "\n".join(lines))
    write_text(result.folder / "report.json", json.dumps({
        "dataset": str(result.dataset),
        "run": str(result.run),
        "train": result.train_values,
        "evaluation": [r.to_dict() for r in result.reports],
        "stage_seconds": result.stage_seconds,
    }, indent=2, default=str) + "\n")
    return path


def _result_table(reports: list[EvalReport]) -> list[str]:
    """The report's markdown table, with the columns of the world (as `drivelab eval` prints)."""
    if any("success_rate" in r.aggregate for r in reports):  # a route world (traffic): no laps
        lines = ["| driver | driving score | success | collisions / ep. | off-road / ep. | "
                 "wrong exit or route / ep. | timeouts / ep. |", "|---|---|---|---|---|---|---|"]
        for r in reports:
            a = r.aggregate
            per = " | ".join(f"{a.get(f'{k}_per_episode', float('nan')):.2f}" for k in
                             ("collisions", "off_road_events", "route_failures", "timeouts"))
            lines.append(f"| {r.driver} | {a['score_mean']:.3f} ± {a['score_std']:.3f} | "
                         f"{a.get('success_rate', float('nan')):.1%} | {per} |")
        return lines
    lines = ["| driver | driving score | reward | min reward | completion | off-track events | laps |",
             "|---|---|---|---|---|---|---|"]
    for r in reports:
        a = r.aggregate
        lines.append(
            f"| {r.driver} | {a['score_mean']:.3f} ± {a['score_std']:.3f} | {a['reward_mean']:.1f} ± "
            f"{a['reward_std']:.1f} | {a['reward_min']:.1f} | {a['completion_mean']:.3f} | "
            f"{a['off_track_events_mean']:.2f} | {a['laps_finished']}/{a['episodes']} |"
        )
    return lines
