"""Does the layout probe pick the faster memory format for the whole trainer?

    python benchmarks/layout.py --dataset PATH [--batches 60] [--repeats 3]

`channels_last: auto` times NCHW against NHWC on a copy of the backbone (forward + backward, a
synthetic batch: `drivelab.train.layout_probe`). This checks that verdict against what it is
for: for each (input size, batch size, precision) it prints the probe's NHWC speed-up, then the
trainer's samples/s with ``train.channels_last`` false and true (drivelab's real loop on the
given dataset, alternated, medians of ``--repeats``), the measured speed-up, what `auto` picks
(the probe beyond its margin, else the rule) and whether that was the faster format. bf16 rows
only run on a CPU with native bf16. Quote ratios: the machine is noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from trainer import CONFIG, WINDOW, drivelab_run

from drivelab.config import load_config
from drivelab.machine import cpu_summary
from drivelab.models import build_policy
from drivelab.precision import bf16_support
from drivelab.train.layout_probe import MARGIN, choose, time_formats
from drivelab.train.speed import auto_channels_last

SETTINGS = ((64, 32), (96, 64), (128, 32))  # (input side, batch): the demo's, the old demo's, larger


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True, help="A CarRacing dataset (the demo's).")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    native, why = bf16_support("cpu")
    precisions = ["32-true", *(["bf16-mixed"] if native else [])]
    print(f"CPU: {cpu_summary()}; {why}; "
          f"{torch.get_num_threads()} torch threads; {args.batches} batches per run, {args.repeats} repeats")
    print("| input x batch | precision | probe: NHWC x NCHW (s) | trainer NCHW | trainer NHWC | measured | "
          "auto picks | right? |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for side, batch in SETTINGS:
            for precision in precisions:
                base = [f"data.path={args.dataset}", f"data.input_size=[{side},{side}]",
                        f"train.batch_size={batch}", f"train.precision={precision}",
                        f"train.max_batches={args.batches}", f"train.checkpoint_every={args.batches}",
                        f"train.log_every={WINDOW}", "train.val_every=null", "data.val_split=null",
                        "train.warmup_batches=0", "train.compile=false",
                        "data.cache=none", "data.workers=2", "data.balance.scheme=none"]
                cfg = load_config(CONFIG, base)
                policy = build_policy(cfg.model.model_copy(update={"history": None}), cfg.frame_shape)
                started = time.perf_counter()
                predicted = time_formats(policy.backbone, (batch, *policy.frame_shape), precision, "cpu")
                probe_s = time.perf_counter() - started
                rates: dict[bool, list[float]] = {False: [], True: []}
                for r in range(args.repeats):
                    for layout in ((False, True) if r % 2 == 0 else (True, False)):
                        layout_cfg = load_config(CONFIG, [*base, f"train.channels_last={str(layout).lower()}"])
                        per_window, _ = drivelab_run(layout_cfg, Path(tmp) / f"{side}_{precision}_{layout}_{r}")
                        rates[layout].append(statistics.median(per_window))
                nchw, nhwc = statistics.median(rates[False]), statistics.median(rates[True])
                measured = nhwc / nchw
                rule = auto_channels_last(True, precision, "cpu")
                picks = choose(predicted, default=rule)
                faster = measured > 1
                verdict = "yes" if picks == faster else ("tie" if abs(measured - 1) < MARGIN else "NO")
                print(f"| {side}x{side} x {batch} | {precision} | {predicted:.2f}x ({probe_s:.1f} s) | "
                      f"{nchw:,.0f} | {nhwc:,.0f} | {measured:.2f}x | {'NHWC' if picks else 'NCHW'} | {verdict} |",
                      flush=True)


if __name__ == "__main__":
    main()
