"""The `live` and `dagger` verbs: collectors -> growing dataset -> trainer -> player, live or in rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drivelab.cli.app import app, out
from drivelab.errors import DrivelabError
from drivelab.extras import require_extra

Overrides = Annotated[list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. live.stop.seconds=600.")]
Runs = Annotated[Path, typer.Option("--runs", help="Root folder of the model lines.")]
Append = Annotated[bool, typer.Option("--append", help="data.path may already hold episodes: add to it "
                                      "(the run trains on them too; what was there is reported).")]


def _say(line: str) -> None:
    out.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def live(
    config: Annotated[Path | None, typer.Argument(help="Experiment config with a live: section "
                                                  "(with --resume: leave it out, overrides still apply).")] = None,
    overrides: Overrides = None,
    collectors: Annotated[int | None, typer.Option("--collectors", help="Collector actors (default live.collectors).")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster (auto or ray://host:port); "
                                                "the dataset and --runs must be shared storage.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue this live run folder.")] = None,
    runs: Runs = Path("runs"),
    append: Append = False,
) -> None:
    """Collect, train and watch at once on Ray actors (DAgger when live.beta lets the policy drive)."""
    from drivelab.config import load_config
    from drivelab.live.runner import run_live

    if resume is not None and config is not None and "=" in config.name:  # `--resume RUN key=value`
        overrides, config = [str(config), *(overrides or [])], None
    if (config is None) == (resume is None):
        raise DrivelabError("give a CONFIG for a new live run or --resume RUN to continue one")
    cfg = load_config(config, list(overrides or [])) if config is not None else None
    require_extra("ray", "drivelab live (`drivelab dagger` runs without Ray)")
    summary = run_live(cfg, runs, collectors=collectors, address=address, resume=resume, say=_say,
                       overrides=list(overrides or []) if resume is not None else None, append=append)
    _say(f"live run {summary['run']}: {summary['reason']}; {summary['episodes']} episodes "
         f"({summary['frames']} frames, {summary['frames_per_s']} frames/s), batch {summary['batch']}, "
         f"{summary['versions']} versions in {summary['seconds']} s{_earlier(summary)}")


@app.command()
def dagger(
    config: Annotated[Path, typer.Argument(help="Experiment config (its live: section, or the defaults).")],
    overrides: Overrides = None,
    rounds: Annotated[int, typer.Option("--rounds", help="DAgger rounds after the expert's round 0.")] = 3,
    runs: Runs = Path("runs"),
    append: Append = False,
) -> None:
    """DAgger in rounds without concurrency: collect with the mixture, aggregate, retrain, repeat."""
    from drivelab.config import load_config
    from drivelab.live.dagger import run_dagger

    summary = run_dagger(load_config(config, list(overrides or [])), runs, rounds, say=_say, append=append)
    _say(f"dagger run {summary['run']}: {summary['rounds']} rounds, {summary['episodes']} episodes "
         f"({summary['frames']} expert-labelled frames), batch {summary['batch']}{_earlier(summary)}")


def _earlier(summary: dict) -> str:
    """What the run trained on besides its own episodes (``--append``)."""
    return f"; it also trained on what was there before: {summary['earlier']}" if summary.get("earlier") else ""
