"""The `demo` verb: the main job end to end on the embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from drivelab.cli.app import app, err, lazy_progress, out
from drivelab.seeds import COLLECTION_SEED, DEFAULT_ENV
from drivelab.workers import DEFAULT_WORKERS


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Config overrides key=value, as `train` takes them (e.g. data.input_size=[32,32]).")] = None,
    out_root: Annotated[Path, typer.Option("--out", help="Root folder; each run gets a new subfolder.")] = Path("demo_out"),
    episodes: Annotated[int, typer.Option(help="Expert episodes to record.")] = 32,
    batches: Annotated[int | None, typer.Option(help="Training batches (default: the config's).")] = None,
    eval_episodes: Annotated[int, typer.Option(help="Held-out tracks to drive.")] = 10,
    workers: Annotated[int, typer.Option(help="Worker processes for collection and evaluation.")] = DEFAULT_WORKERS,
    seed: Annotated[int, typer.Option(help="First track seed of the collection.")] = COLLECTION_SEED,
    noise: Annotated[float, typer.Option(help="DART noise probability while recording.")] = 0.03,
    max_steps: Annotated[int, typer.Option(help="Step cap per episode.")] = 1000,
    config: Annotated[Path | None, typer.Option(help="Experiment YAML or shipped config name (default: carracing/pilotnet, "
                                                "or traffic/<scenario>_pilotnet for a traffic --env).")] = None,
    env: Annotated[str, typer.Option(help="World: carracing, or a traffic scenario (intersection, roundabout[:options]).")] = DEFAULT_ENV,
    settings: Annotated[list[str] | None, typer.Option("--set", hidden=True, help="Older spelling of a positional override.")] = None,
    dagger: Annotated[bool, typer.Option("--dagger", help="After behaviour cloning, DAgger rounds: the policy "
                                         "drives new tracks, the expert labels them, training continues.")] = False,
    dagger_rounds: Annotated[int, typer.Option("--dagger-rounds", help="DAgger rounds with --dagger.")] = 2,
) -> None:
    """The main job end to end: collect expert data, train, drive on held-out tracks."""
    from drivelab.demo import DemoOptions, default_config, phase_times, run_demo
    from drivelab.evaluate.report import render_report
    from drivelab.train.progress import RichProgress

    opts = DemoOptions(out=out_root, episodes=episodes, workers=workers, seed=seed, noise=noise,
                       max_steps=max_steps, batches=batches, eval_episodes=eval_episodes,
                       config=config or default_config(env), dagger_rounds=dagger_rounds if dagger else 0,
                       env=env, overrides=(*(overrides or ()), *(settings or ())))
    titles = {
        "collect": f"1/3 collect {episodes} {env} expert episodes (noise {noise}, {workers} workers)",
        "train": f"2/3 train {opts.config.name}",
        "evaluate": f"3/3 drive the policy and the expert on {eval_episodes} held-out tracks",
        "dagger": f"2b/3 {dagger_rounds} DAgger rounds of {max(1, episodes // 4)} episodes (expert labels)",
    }
    out.rule("[bold]drivelab demo[/]")
    with lazy_progress(episodes, "collect") as on_collect, \
            lazy_progress(2 * eval_episodes, "eval", unit="tracks") as on_eval:
        result = run_demo(
            opts,
            on_stage=lambda name: out.print(f"[bold]{titles[name]}[/]"),
            on_collect=on_collect,
            train_progress=RichProgress(err, title="train"),
            on_eval=on_eval,
        )
    render_report(out, result.reports)
    table = Table(title="where things are", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # long paths wrap whole instead of being cut
    table.add_row("dataset", escape(f"{result.dataset} ({result.info['frames']} frames)"))
    table.add_row("histograms", escape(str(result.histogram)))
    table.add_row("policy run", escape(f"{result.run} (TensorBoard: {result.run}/tb)"))
    table.add_row("report", escape(str(result.report_path)))
    out.print(table)
    ratio = result.reports[0].aggregate.get("score_ratio_to_expert", float("nan"))
    out.print(f"[green]done[/]: policy driving score {result.reports[0].aggregate['score_mean']:.3f} "
              f"= {ratio:.2f} x the expert's on the same held-out tracks")
    out.print(f"where the minutes went (m:ss): {phase_times(result.stage_seconds)}")


