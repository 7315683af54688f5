"""More policy variants on a traffic study's behaviour-cloning data (`traffic_study.py --out DIR`).

    python benchmarks/traffic_variants.py --study DIR --out OUT [--variants branched,speed_head]

Each variant trains ``--seeds`` seeds on the study's ``bc.zarr`` with the study's frame budget per
seed (its BC rows' frames), the same batches, batch size and input size, and drives the study's
held-out scenarios. Variants:

* ``branched``: `configs/traffic/intersection_branched.yaml` without its speed head: the command
  selects one head stack per value (CIL), against the study's BC row (command concatenated).
* ``speed_head``: the study's BC config plus CILRS's speed-prediction head (weight 0.5), against
  the study's BC row (no speed head).

The rows print next to the study's own, mean ± std over seeds; ``OUT/variants.json`` keeps all.
"""

from __future__ import annotations

import argparse
import json
import os
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
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="branched,speed_head")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    study = json.loads((args.study / "study.json").read_text())
    given = {k: v for k, v in study["args"].items()}
    seeds = int(given["seeds"])
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
    scenarios = study["reports"][0]["seeds"]
    specs = [DriverSpec("policy", run=r) for rs in runs.values() for r in rs]
    reports = [r.to_dict() for r in evaluate_many(specs, scenarios, env=given["env"], workers=args.workers,
                                                  max_steps=int(given["max_steps"]))]
    rows, at = {"behaviour cloning (study)": study["per_seed"]["behaviour cloning"]}, 0
    for name, rs in runs.items():
        rows[name] = [seed_row(r) for r in reports[at: at + len(rs)]]
        at += len(rs)
    lines = [f"{given['env']}, scenarios {scenarios[0]}..{scenarios[-1]}; CPU {machine()['cpu']}",
             "| variant | " + " | ".join(KEYS) + " | frames per seed |", "|---" * (len(KEYS) + 2) + "|",
             *(table_row(name, r, budget) for name, r in rows.items()), *spread_verdicts(rows)]
    print("\n".join(lines))
    (args.out / "variants.json").write_text(json.dumps({"runs": runs, "per_seed": rows, "reports": reports,
                                                        "table": lines}, indent=1, default=str))


if __name__ == "__main__":
    main()
