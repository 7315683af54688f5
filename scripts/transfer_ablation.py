"""Which input does a policy lean on? Offline val metrics with the frames or the history broken.

Charles's model_0009 (CNN + LSTM, transferred and trained unfrozen) "figured to fit the RNN part
only and never really use the CNN part". This measures that for a drivelab run: the val split is
scored as in `drivelab eval --offline` (the run's own pipeline and weights), intact and with one
input *shuffled across the split* (each sample gets another sample's frames, or another sample's
history window) or *zeroed* (after normalisation). Shuffling keeps each input's distribution
and only breaks its link to the target, so the loss increase is that input's permutation
importance; a model that ignores its frames loses nothing when they are shuffled.

    python scripts/transfer_ablation.py RUN[@BATCH] [RUN ...] --runs ROOT --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from drivelab.data.batch_loader import make_loader
from drivelab.evaluate.offline import OfflineJob, OfflineReport

MODES = ("intact", "frames_shuffled", "history_shuffled", "frames_zeroed", "history_zeroed")


class AblatedPipeline:
    """The run's input pipeline with one input shuffled within the batch or zeroed."""

    def __init__(self, pipeline: Any, mode: str, seed: int = 0) -> None:
        self.pipeline = pipeline
        self.mode = mode
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        frames, history = self.pipeline(batch)
        target, _, how = self.mode.partition("_")
        if target == "history" and history is None:
            raise SystemExit(f"{self.mode}: this run has no history input")
        value = frames if target == "frames" else history
        if how == "shuffled":
            order = torch.randperm(value.shape[0], generator=self.generator).to(value.device)
            value = value[order]
        elif how == "zeroed":
            value = torch.zeros_like(value)
        if target == "frames":
            return value, history
        return frames, value


def score(ref: str, runs_root: Path, split: str, mode: str, batch_size: int) -> OfflineReport:
    job = OfflineJob(ref, split, runs_root=runs_root, batch_size=batch_size, device="cpu")
    # Batches drawn across the whole split (seeded), so a within-batch shuffle pairs samples
    # from different episodes and moments, not neighbouring steps.
    order = torch.randperm(len(job.samples), generator=torch.Generator().manual_seed(1)).tolist()
    job.batches = [sorted(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    if mode != "intact":
        job.runtime.pipeline = AblatedPipeline(job.runtime.pipeline, mode)
    return job.run()


def last_action_distance(ref: str, runs_root: Path, split: str, batch_size: int) -> dict[str, float]:
    """Mean |prediction - last executed action| and |target - last executed action| per output.

    The history window ends with the controls executed one step earlier; a policy that repeats
    them (model_0009's shortcut) predicts close to them, closer than the expert's targets are.
    """
    job = OfflineJob(ref, split, runs_root=runs_root, batch_size=batch_size, device="cpu")
    history = job.runtime.config.model.history
    if history is None:
        return {}
    offsets, start = {}, 0
    for name in history.signals:
        offsets[name] = start
        start += history.signal_size(name)
    outputs = [o for o in job.runtime.config.model.outputs if o in offsets]
    sums = {f"{o}_{what}": 0.0 for o in outputs for what in ("pred_vs_last", "target_vs_last")}
    policy = job.runtime.policy.eval()
    loader = make_loader(job.samples, job.batches, 0, pin_memory=False, seed=0)
    with torch.inference_mode():
        for batch in loader:
            actions = policy.actions(policy(*job.runtime.pipeline(batch)))
            for output in outputs:
                last = batch["history"][:, -1, offsets[output]].double()
                target = batch[f"target/{output}"].reshape(last.shape[0], -1)[:, 0].double()
                sums[f"{output}_pred_vs_last"] += (actions[output].double() - last).abs().sum().item()
                sums[f"{output}_target_vs_last"] += (target - last).abs().sum().item()
    return {k: v / len(job.samples) for k, v in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="+")
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, dict[str, Any]] = {}
    for ref in args.refs:
        results[ref] = {}
        for mode in MODES:
            try:
                report = score(ref, args.runs, args.split, mode, args.batch_size)
            except SystemExit as skipped:
                print(skipped)
                continue
            row = {"loss": report.loss, **{f"{o}_mae": m.mae for o, m in report.outputs.items()},
                   **{f"{o}_loss": m.loss for o, m in report.outputs.items()}}
            results[ref][mode] = row
            print(f"{ref:45s} {mode:17s} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()),
                  flush=True)
        distance = last_action_distance(ref, args.runs, args.split, args.batch_size)
        if distance:
            results[ref]["last_action"] = distance
            print(f"{ref:45s} last action       "
                  + "  ".join(f"{k} {v:.4f}" for k, v in distance.items()), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
