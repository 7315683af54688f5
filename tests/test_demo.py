"""`drivelab demo` end to end at toy sizes: every stage runs and the report is written."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, run_cli_here


def test_demo_end_to_end_small(tmp_path: Path) -> None:
    r = run_cli("demo", "--out", str(tmp_path), "--episodes", "3", "--max-steps", "60",
                "--batches", "4", "--eval-episodes", "1", "--workers", "2", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    folder = next(tmp_path.glob("demo-*"))
    report = json.loads((folder / "report.json").read_text())
    drivers = [e["driver"] for e in report["evaluation"]]
    assert drivers[1] == "expert" and drivers[0].endswith("_v1")
    assert (folder / "report.md").read_text().startswith("# drivelab demo")
    assert (folder / "histograms.png").exists()
    assert "driving score" in r.stdout and "where things are" in r.stdout
    # the last line says where the minutes went, stage by stage, and in the report too
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("where the minutes went") and all(
        f"{stage} " in last for stage in ("collect", "train", "evaluate", "total")), last
    assert set(report["stage_seconds"]) == {"collect", "train", "evaluate", "total"}
    # the demo's evaluation is kept with its run, where `runs` and the card read it
    (run,) = (folder / "runs").glob("*/*_v1")
    (kept,) = (run / "eval").glob("closed_loop_*.json")
    assert [d["driver"] for d in json.loads(kept.read_text())["drivers"]] == drivers
    runs = run_cli_here("runs", "--runs", str(folder / "runs"))
    assert runs.returncode == 0 and "cap 60" in runs.stdout, runs.stdout + runs.stderr  # score with its cap
    # a second demo never touches the first one's folder
    r2 = run_cli_here("demo", "--out", str(tmp_path), "--episodes", "0")
    assert r2.returncode == 2 and "--episodes must be at least 3" in r2.stderr
    assert len(list(tmp_path.glob("demo-*"))) == 1
