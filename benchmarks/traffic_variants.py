"""More policy variants on a traffic study's behaviour-cloning data (`traffic_study.py --out DIR`).

    python benchmarks/traffic_variants.py --study DIR --out OUT [--variants branched,speed_head]

Each variant trains ``--seeds`` seeds on the study's ``bc.zarr`` with the study's frame budget per
seed (its BC rows' frames), the same batches, batch size and input size, and drives the study's
held-out scenarios. Variants:

* ``branched``: `configs/traffic/intersection_branched.yaml` without its speed head: the command
  selects one head stack per value (CIL), against the study's BC row (command concatenated).
* ``speed_head``: the study's BC config plus CILRS's speed-prediction head (weight 0.5), against
  the study's BC row (no speed head).

The temporal variants (issue 32's kinds study) all take the same optimiser steps and the same 64
labelled frames per step, on `intersection_concat` (command concatenated):

* ``single_b64``: one frame, batch 64 (the control at this batch);
* ``frame_stack``: the last 4 frames stacked as channels (`data.frames=4`), batch 64;
* ``lstm``: the LSTM kind (one layer of 64) on shuffled windows of 16 frames, 4 windows a batch;
* ``transformer_k4`` / ``transformer_k8``: the temporal transformer over the last 4 / 8 steps, the
  same windows.

Training speed is each run's median ``samples_per_s`` from metrics.jsonl: labelled frames per
second on this machine (a sequence order counts its windows' frames, a stack counts one).

The rows print next to the study's own, mean ± std over seeds; ``OUT/variants.json`` keeps all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from traffic_study import KEYS, seed_row, spread_verdicts, table_row

from drivelab.config import load_config
from drivelab.evaluate.drivers import DriverSpec
from drivelab.evaluate.report import evaluate_many
from drivelab.models.specs_table import machine
from drivelab.train import train

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "branched": (ROOT / "configs" / "traffic" / "intersection_branched.yaml", ["model.speed_head=null"]),
    "speed_head": (ROOT / "configs" / "traffic" / "intersection_pilotnet.yaml",
                   ["model.speed_head={weight: 0.5, widths: [64]}"]),
    "single_b64": (ROOT / "configs" / "traffic" / "intersection_concat.yaml", ["train.batch_size=64"]),
    "frame_stack": (ROOT / "configs" / "traffic" / "intersection_concat.yaml",
                    ["data.frames=4", "train.batch_size=64"]),
    "lstm": (ROOT / "configs" / "traffic" / "intersection_concat.yaml",
             ["model.recurrent={layers: 1, hidden: 64}", "train.bptt={mode: window, window: 16}",
              "train.batch_size=4"]),
    "transformer_k4": (ROOT / "configs" / "traffic" / "intersection_transformer.yaml",
                       ["model.transformer.window=4", "train.batch_size=4"]),
    "transformer_k8": (ROOT / "configs" / "traffic" / "intersection_transformer.yaml", ["train.batch_size=4"]),
}
TEMPORAL = "single_b64,frame_stack,lstm,transformer_k4,transformer_k8"


def frames_per_s(run: str) -> float:
    """Labelled frames per second while training: the run's median samples/s."""
    rates = [json.loads(line).get("samples_per_s") for line in (Path(run) / "metrics.jsonl").open()]
    return statistics.median(r for r in rates if r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="branched,speed_head", help=f"or the temporal set: {TEMPORAL}")
    parser.add_argument("--batches", type=int, help="optimiser steps (default: the study's)")
    parser.add_argument("--scenarios", type=int, help="drive only the first N of the study's scenarios")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    study = json.loads((args.study / "study.json").read_text())
    given = {k: v for k, v in study["args"].items()}
    seeds = int(given["seeds"])
    if args.batches:
        given["batches"] = args.batches
    budget = [int(x) for x in next(line for line in study["table"] if line.startswith("| behaviour cloning"))
              .rstrip(" |").rsplit("|", 1)[1].split(",")]  # the study's frames per seed
    args.out.mkdir(parents=True, exist_ok=False)
    dataset = args.study / "bc.zarr"
    runs: dict[str, list[str]] = {}
    for name in args.variants.split(","):
        config_path, extra = VARIANTS[name]
        runs[name] = []
        for seed in range(seeds):
            config = load_config(config_path, [
                f"data.path={dataset}", f"data.input_size=[{given['input']},{given['input']}]",
                "data.val_split=null", f"seed={seed}", f"train.max_batches={given['batches']}",
                f"train.batch_size={given['batch_size']}", f"train.checkpoint_every={given['batches']}",
                f"train.val_every={10 * int(given['batches'])}", "train.log_every=50", "train.warmup_batches=50",
                f"data.max_frames={budget[seed]}", *extra])
            runs[name].append(str(train(config, args.out / "runs" / f"{name}_{seed}").run.path))
            print(f"{name} seed {seed}: {runs[name][-1]}", flush=True)
    scenarios = study["reports"][0]["seeds"][: args.scenarios]
    specs = [DriverSpec("policy", run=r) for rs in runs.values() for r in rs]
    reports = [r.to_dict() for r in evaluate_many(specs, scenarios, env=given["env"], workers=args.workers,
                                                  max_steps=int(given["max_steps"]))]
    rows, at = {"behaviour cloning (study)": study["per_seed"]["behaviour cloning"]}, 0
    for name, rs in runs.items():
        rows[name] = [seed_row(r) for r in reports[at: at + len(rs)]]
        at += len(rs)
    lines = [f"{given['env']}, scenarios {scenarios[0]}..{scenarios[-1]}; CPU {machine()['cpu']}",
             "| variant | " + " | ".join(KEYS) + " | frames per seed |", "|---" * (len(KEYS) + 2) + "|",
             *(table_row(name, r, budget) for name, r in rows.items()), "",
             "| variant | labelled frames/s while training (per seed) |", "|---|---|",
             *(f"| {name} | {', '.join(f'{frames_per_s(r):.0f}' for r in rs)} |" for name, rs in runs.items()),
             "", *spread_verdicts(rows)]
    print("\n".join(lines))
    (args.out / "variants.json").write_text(json.dumps({"runs": runs, "per_seed": rows, "reports": reports,
                                                        "table": lines}, indent=1, default=str))


if __name__ == "__main__":
    main()
