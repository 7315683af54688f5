"""The model card's closed-loop section: results next to the expert and the model driving.

Read from the run's latest saved evaluation (`drivelab.runs.evals`): a table of every driver
(mean ± std over held-out tracks) and the GIF of the median-score track, so the card shows
typical driving rather than the best lap; without an evaluation, the command that makes one
and the last GIF watch mode recorded. Pictures go to the card's media folder (``media_dir``),
linked relative to the card page.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from drivelab.reports.document import Document
from drivelab.reports.figures import shrink_gif
from drivelab.reports.lines import VersionStatus, cap_note, score_text
from drivelab.runs.folder import RunFolder
from drivelab.seeds import HELD_OUT_SEED


def driving_section(
    doc: Document, run: RunFolder, status: VersionStatus, media_dir: Path, media: list[Path], gif_bytes: int
) -> None:
    """The card's closed-loop results next to the expert, and a GIF of typical driving.

    Without a saved evaluation: how to make one, and the last watched checkpoint's GIF.
    """
    doc.para("*Closed-loop evaluation:*")
    from drivelab.runs.evals import latest_eval

    record = latest_eval(run)
    if record is None:
        doc.para(f"Not evaluated yet: `drivelab eval {run.path} --episodes 10 --seed {HELD_OUT_SEED} --baseline expert "
                 "--video DIR` keeps its results with the run.")
        _watch_gif(doc, run, status, media_dir, media, gif_bytes)
        return
    tracks = record.get("tracks", [])
    if len(tracks) == 1:
        span = f"1 held-out track (seed {tracks[0]})"
    else:
        span = f"{len(tracks)} held-out tracks (seeds {tracks[0]}-{tracks[-1]})" if tracks else "no tracks"
    doc.para(f"Checkpoint batch *{record.get('batch')}*, {span}, "
             f"evaluated {str(record.get('created', ''))[:16].replace('T', ' ')}; mean ± std over tracks. "
             + cap_note(record))
    drivers = record.get("drivers", [])
    if any("success_rate" in d.get("aggregate", {}) for d in drivers):
        _route_table(doc, drivers, record.get("env"))
    else:
        _lap_table(doc, drivers)
    from drivelab.runs.evals import policy_report

    report = policy_report(record) or {}
    videos = report.get("videos", [])
    existing = [Path(v) for v in videos if Path(v).is_file()]
    if existing:
        chosen, caption = _typical_video(existing, report.get("episodes", []))
        picture = shrink_gif(chosen, media_dir / "driving.gif", gif_bytes)
        media.append(picture)
        doc.para(f"*The model driving* ({caption}):")
        doc.image(f"{media_dir.name}/driving.gif", f"{run.name} driving")
    elif videos:
        doc.para(f"(the evaluation's videos are gone from {Path(videos[0]).parent})")


def _ratio(a: dict[str, Any]) -> str:
    ratio = a.get("score_ratio_to_expert")
    return "-" if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)) else f"{ratio:.3f}"


def _lap_table(doc: Document, drivers: list[dict[str, Any]]) -> None:
    """CarRacing: reward, completion, off-track / unstuck and laps."""
    rows = []
    for driver in drivers:
        a = driver.get("aggregate", {})
        rows.append([
            driver.get("driver", "?"),
            score_text(a),
            _pm(a, "reward", ".1f"),
            _pm(a, "completion", ".3f"),
            _mean(a, "off_track_events_mean") + " / " + _mean(a, "unstuck_mean"),
            f"{a.get('laps_finished', 0)}/{a.get('episodes', 0)}",
            _ratio(a),
        ])
    doc.table(["driver", "driving score", "reward", "completion", "off-track / unstuck", "laps", "÷ expert"], rows)


def _route_table(doc: Document, drivers: list[dict[str, Any]], env: str | None) -> None:
    """A route world (traffic): success and infractions per episode; it has no laps."""
    if env:
        doc.para(f"World: `{env}`.")
    rows = []
    for driver in drivers:
        a = driver.get("aggregate", {})
        rate = a.get("success_rate")
        per = [_per(a, k) for k in ("collisions", "off_road_events", "route_failures", "timeouts")]
        rows.append([driver.get("driver", "?"), score_text(a),
                     "-" if rate is None else f"{rate:.1%}", *per, _ratio(a)])
    doc.table(["driver", "driving score", "success", "collisions / episode", "off-road / episode",
               "wrong exit or route / episode", "timeouts / episode", "÷ expert"], rows)


def _per(a: dict[str, Any], key: str) -> str:
    value = a.get(f"{key}_per_episode")
    return "-" if value is None else f"{value:.2f}"


def _watch_gif(doc: Document, run: RunFolder, status: VersionStatus, media_dir: Path, media: list[Path], gif_bytes: int) -> None:
    """Without an evaluation, the last watched checkpoint's GIF shows how the model drives."""
    # watch videos: MP4 now, GIF from before drivelab wrote MP4
    gifs = sorted([*(run.path / "watch").glob("batch_*.mp4"), *(run.path / "watch").glob("batch_*.gif")],
                  key=lambda p: int(p.stem.split("_")[-1]))
    if not gifs:
        return
    picture = shrink_gif(gifs[-1], media_dir / "driving.gif", gif_bytes)
    media.append(picture)
    score = f", watch score {status.watch_score[1]:.3f}" if status.watch_score else ""
    doc.para(f"*Watched during training* (batch {gifs[-1].stem.split('_')[-1]}{score}):")
    doc.image(f"{media_dir.name}/driving.gif", f"{run.name} driving", width="60%")


def _track_of(path: Path) -> str:
    stem = path.stem
    return stem.rpartition("track")[2] if "track" in stem else stem


def _typical_video(videos: list[Path], episodes: list[dict[str, Any]]) -> tuple[Path, str]:
    """The GIF of the median-score track, so the card shows typical driving, not the best lap."""
    scores = {str(e.get("seed")): e.get("score") for e in episodes if e.get("failed") is None}
    scored = [(scores[_track_of(v)], v) for v in videos if isinstance(scores.get(_track_of(v)), int | float)]
    if not scored:
        return videos[0], f"track {_track_of(videos[0])}"
    scored.sort(key=lambda sv: sv[0])
    score, video = scored[(len(scored) - 1) // 2]
    median = ", the median track" if len(scored) > 2 else ""
    return video, f"track {_track_of(video)}, driving score {score:.2f}{median}"


def _pm(a: dict[str, Any], key: str, fmt: str) -> str:
    mean, std = a.get(f"{key}_mean"), a.get(f"{key}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:{fmt}}±{(std or 0.0):{fmt}}"


def _mean(a: dict[str, Any], key: str) -> str:
    value = a.get(key)
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"
