"""Evaluation tables: several drivers on the same tracks, with the expert as the yardstick."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.metrics import EpisodeResult
from drivelab.evaluate.runner import EvalReport, evaluate
from drivelab.seeds import DEFAULT_ENV


def evaluate_many(
    specs: Sequence[DriverSpec],
    seeds: Sequence[int],
    env: str = DEFAULT_ENV,
    workers: int = 1,
    max_steps: int = 1000,
    video_dir: str | Path | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
    replace_videos: bool = False,
) -> list[EvalReport]:
    """Each driver in turn on the same track seeds; progress counts tracks over all drivers."""
    total = len(specs) * len(seeds)
    done = {"n": 0}

    def steps(n: int) -> None:
        if on_progress:
            on_progress(n, done["n"], total)

    def episode(_row: EpisodeResult) -> None:
        done["n"] += 1
        if on_progress:
            on_progress(0, done["n"], total)

    reports = []
    for spec in specs:
        report = evaluate(spec, seeds, env=env, workers=workers, max_steps=max_steps,
                          video_dir=video_dir, on_progress=steps, on_episode=episode,
                          replace_videos=replace_videos)
        reports.append(report)
        if report.interrupted:
            break
    expert = next((r for r in reports if r.driver == "expert"), None)
    if expert is not None:
        for r in reports:
            r.aggregate.update(ratios_to(r, expert))
    return reports


def ratios_to(report: EvalReport, expert: EvalReport) -> dict[str, Any]:
    """Mean score and reward as a fraction of the expert's on the same tracks."""
    out: dict[str, Any] = {}
    for key in ("score", "reward"):
        ref = expert.aggregate.get(f"{key}_mean", math.nan)
        mine = report.aggregate.get(f"{key}_mean", math.nan)
        out[f"{key}_ratio_to_expert"] = mine / ref if ref and not math.isnan(ref) else math.nan
    return out


def _pm(agg: dict[str, Any], key: str, fmt: str) -> str:
    mean, std = agg.get(f"{key}_mean"), agg.get(f"{key}_std")
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:{fmt}}±{std:{fmt}}"


def render_report(console: Console, reports: Sequence[EvalReport]) -> None:
    """A per-track table and an aggregate table, with the columns that mean something in the
    env's world: CarRacing's reward, off-track/unstuck and laps; a route world's (traffic)
    outcome, success rate and infractions per episode (it has no laps; its reward is
    highway-env's, not a lap's)."""
    if not reports:
        return
    routed = any("success_rate" in r.aggregate for r in reports)
    what = "outcome (driving score)" if routed else "reward (driving score)"
    tracks = Table(title=f"closed-loop evaluation on {reports[0].env}: {what}")
    tracks.add_column("track", justify="right")
    for r in reports:
        tracks.add_column(escape(r.driver), justify="right")
    by_driver = [{row.seed: row for row in r.rows} for r in reports]
    for seed in reports[0].seeds:
        cells = []
        for rows in by_driver:
            row = rows.get(seed)
            if row is None:
                cells.append("-")
            elif row.failed:
                cells.append("[red]failed[/]")
            elif routed:
                cells.append(f"{escape(str(row.outcome or '-'))} ({row.score:.2f})")
            else:
                cells.append(f"{row.reward:.0f} ({row.score:.2f})")
        tracks.add_row(str(seed), *cells)
    console.print(tracks)
    if routed:
        _print_route_outcomes(console, reports)
    else:
        _print_laps(console, reports)
    cap, capped = reports[0].max_steps, sum(r.capped for r in reports)
    if cap is not None:  # a lap cut by the cap scores its completion only: never leave that unsaid
        console.print(f"episodes capped at {cap} steps" + (
            f"; {capped} ended by the cap (their score is the completion reached)" if capped else ""),
            highlight=False, soft_wrap=True)
    for r in reports:
        if r.aggregate["failed"]:
            for row in r.rows:
                if row.failed:
                    console.print(f"[red]{escape(r.driver)} track {row.seed} failed:[/] {escape(str(row.failed))}")
        if r.interrupted:
            console.print(f"[yellow]{escape(r.driver)}: interrupted after {len(r.rows)} tracks[/]")


def _ratio(a: dict[str, Any]) -> str:
    ratio = a.get("score_ratio_to_expert")
    return "-" if ratio is None or math.isnan(ratio) else f"{ratio:.3f}"


def _print_laps(console: Console, reports: Sequence[EvalReport]) -> None:
    """CarRacing's aggregate: score, reward, worst reward, off-track/unstuck, laps."""
    # compact (no vertical rules, tight padding) so it stays whole in an 80-column terminal;
    # completion and every per-episode number are in the per-track table and the JSON
    agg = Table(title="mean ± std over tracks", box=box.SIMPLE_HEAD, padding=(0, 1))
    agg.add_column("driver", overflow="fold", min_width=12)
    for col in ("score", "reward", "min", "off/stuck", "laps", "÷expert"):
        agg.add_column(col, justify="right", no_wrap=True)
    for r in reports:
        a = r.aggregate
        off, unstuck = a.get("off_track_events_mean", math.nan), a.get("unstuck_mean", math.nan)
        agg.add_row(
            escape(r.driver),
            _pm(a, "score", ".3f"),
            _pm(a, "reward", ".1f"),
            "-" if math.isnan(a["reward_min"]) else f"{a['reward_min']:.1f}",
            "-" if math.isnan(off) else f"{off:.1f}/{unstuck:.1f}",
            f"{a['laps_finished']}/{a['episodes']}",
            _ratio(a),
        )
    console.print(agg)


def _print_route_outcomes(console: Any, reports: Sequence[Any]) -> None:
    """A route world's aggregate (traffic): driving score, success rate, infractions per episode.

    Collisions are split by cause (`drivelab.sim.infractions.collision_cause`): "crash" the ego
    drove into a car, "struck" a car drove into the stopped or slower ego."""
    # short headers so it stays whole in an 80-column terminal, like CarRacing's table
    table = Table(title="route outcomes: score mean ± std, success rate, then per episode: ego "
                  "collisions (crash), struck by a car, wrong exit or route, timeouts (t-out)",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("driver", overflow="fold", min_width=12)
    # (off-road events are in the score's penalty and the JSON rows)
    for col in ("score", "success", "crash", "struck", "wrong", "t-out", "÷expert"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in reports:
        a = r.aggregate
        if "success_rate" not in a:  # every episode failed: no outcome to count
            table.add_row(escape(r.driver), _pm(a, "score", ".3f"), *["-"] * 5, _ratio(a))
            continue
        struck = a.get("collisions_struck_per_episode", 0.0)
        table.add_row(escape(r.driver), _pm(a, "score", ".3f"), f"{a['success_rate']:.1%}",
                      f"{a['collisions_per_episode'] - struck:.2f}", f"{struck:.2f}",
                      *(f"{a[f'{k}_per_episode']:.2f}" for k in ("route_failures", "timeouts")),
                      _ratio(a))
    console.print(table)
