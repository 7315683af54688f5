"""Trainer throughput: drivelab's loop vs a bare PyTorch loop, and the loader vs in-RAM arrays.

    python benchmarks/trainer.py [--dataset PATH] [--batches 40] [--repeats 3] [--workers 2]

1. samples/s of `drivelab.train.train` on `configs/carracing/pilotnet.yaml` vs a bare
   hand-written loop (same model and seed, data, batch size, optimizer, loss, clipping, loader
   workers) in this process. Goal: >= 0.97x. Both are timed over windows of steps after a
   warm-up; the trainer's own metrics rows give its windows.
2. loader samples/s (frames/s with one frame per sample) reading the Zarr store through
   `EpisodeFrameDataset` over one whole first epoch from a cold cache (every episode decoded
   once) vs the same gather from in-RAM numpy arrays, both through the same DataLoader and batch
   order. Goal: >= 0.5x.
3. the data-wait share of a training step (time blocked on the loader / step time), from the
   trainer's metrics. Goal: < 5 %.

Medians over repeats; the machine may be shared and noisy. Without ``--dataset`` a small real
CarRacing dataset is collected first (about a minute).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from drivelab.config import ExperimentConfig, load_config
from drivelab.data.loader import EpisodeFrameDataset, collate_batch, normalize_frames
from drivelab.data.store import DatasetStore
from drivelab.models import build_policy
from drivelab.train import read_metrics, train
from drivelab.train.inputs import EpochBatchSampler, make_loader, open_inputs, with_history_sizes
from drivelab.train.trainer import seed_everything

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "carracing" / "pilotnet.yaml"
WINDOW = 10  # steps per timing window


def drivelab_run(cfg: ExperimentConfig, root: Path) -> tuple[list[float], list[float]]:
    """(samples/s, data-wait share) of each of the trainer's log windows after the first."""
    result = train(cfg, runs_root=root)
    rows = [r for r in read_metrics(result.run.metrics_path) if "samples_per_s" in r][1:]
    return [r["samples_per_s"] for r in rows], [r["data_wait_share"] for r in rows]


def bare_run(cfg: ExperimentConfig, batches: int) -> list[float]:
    """The same training written by hand: samples/s of each window after the first."""
    inputs = open_inputs(cfg)
    cfg = with_history_sizes(cfg, inputs.history_sizes)
    seed_everything(cfg.seed)
    model = build_policy(cfg.model, cfg.frame_shape, inputs.history_sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        inputs.train,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.workers,
        collate_fn=collate_batch,
        generator=generator,
        prefetch_factor=4 if cfg.data.workers else None,
        persistent_workers=cfg.data.workers > 0,
    )
    outputs = cfg.model.outputs
    rates: list[float] = []
    done = 0
    window_start = time.perf_counter()
    while done < batches:
        for batch in loader:
            frames = batch["frames"].float().div_(255.0).sub_(0.5)
            predictions = model(frames, batch["history"])
            loss = sum(
                F.mse_loss(predictions[o], batch[f"target/{o}"][:, 0]) for o in outputs
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            done += 1
            if done % WINDOW == 0:
                now = time.perf_counter()
                rates.append(WINDOW * cfg.train.batch_size / (now - window_start))
                window_start = now
            if done >= batches:
                break
    return rates[1:]


class InRamFrames(torch.utils.data.Dataset):
    """The same samples as `EpisodeFrameDataset`, gathered from numpy arrays held in RAM."""

    def __init__(self, zarr_view: EpisodeFrameDataset) -> None:
        store = zarr_view.store
        frames, history, targets, starts = [], [], {o: [] for o in zarr_view.outputs}, []
        offset = 0
        for info in zarr_view.episodes:
            group = store.episode(info.index)
            frames.append(np.asarray(group["frames"][:]))
            history.append(np.concatenate(
                [np.asarray(group[f"telemetry/{s}"][:], np.float32) for s in zarr_view.history_signals],
                axis=1,
            ))
            for o in zarr_view.outputs:
                targets[o].append(np.asarray(group[f"actions/{o}"][:], np.float32))
            starts.append(np.full(info.length, offset))
            offset += info.length
        self.frames = np.concatenate(frames)
        self.history = np.concatenate(history)
        self.targets = {o: np.concatenate(v) for o, v in targets.items()}
        self.episode_start = np.concatenate(starts)
        self.length = zarr_view.history_length

    def __len__(self) -> int:
        return len(self.frames)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, np.int64)
        window = np.maximum(idx[:, None] + np.arange(-self.length + 1, 1)[None, :], self.episode_start[idx, None])
        batch = {
            "frames": torch.from_numpy(self.frames[idx].transpose(0, 3, 1, 2).copy()),
            "history": torch.from_numpy(self.history[window]),
        }
        for o, values in self.targets.items():
            batch[f"target/{o}"] = torch.from_numpy(values[idx])
        return batch


def loader_rate(dataset: torch.utils.data.Dataset, cfg: ExperimentConfig, batches: int) -> float:
    """Samples/s delivered by the trainer's DataLoader set-up over ``batches`` batches."""
    sampler = EpochBatchSampler(len(dataset), cfg.train.batch_size, cfg.seed)
    loader = make_loader(dataset, sampler, cfg.data.workers, False, cfg.seed)
    started = time.perf_counter()
    for n, batch in enumerate(loader, start=1):
        normalize_frames(batch["frames"], "shifted")  # touch the data as the trainer would
        if n >= batches:
            break
    return batches * cfg.train.batch_size / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, help="Existing dataset (else a small one is collected).")
    ap.add_argument("--batches", type=int, default=60, help="Training batches per run.")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="Loader worker processes.")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset
        if dataset is None:
            from drivelab.data.collect import CollectPlan, collect

            dataset = Path(tmp) / "bench.zarr"
            print("collecting a small CarRacing dataset (4 episodes x 300 steps) ...")
            collect(dataset, CollectPlan(env="carracing", seed=42, noise=0.1, max_steps=300),
                    episodes=4, workers=2, val_episodes=1)
        overrides = [
            f"data.path={dataset}",
            f"data.workers={args.workers}",
            f"train.batch_size={args.batch_size}",
            f"train.max_batches={args.batches}",
            f"train.log_every={WINDOW}",
            f"train.checkpoint_every={args.batches}",
            "train.val_every=null",
            "data.val_split=null",  # the bare loop validates nothing either
            "train.warmup_batches=0",
        ]
        cfg = load_config(CONFIG, overrides)
        print(f"{CONFIG.name}: batch {args.batch_size}, {args.workers} loader workers, "
              f"{args.batches} batches per run, {torch.get_num_threads()} torch threads, "
              f"{os.cpu_count()} cores; dataset {dataset}")

        ours: list[float] = []
        bare: list[float] = []
        waits: list[float] = []
        for r in range(args.repeats):
            # Alternate which loop goes first, so a drift in machine load hits both alike.
            if r % 2:
                bare += bare_run(cfg, args.batches)
            rates, shares = drivelab_run(cfg, Path(tmp) / f"runs{r}")
            ours += rates
            waits += shares
            if not r % 2:
                bare += bare_run(cfg, args.batches)
            print(f"  repeat {r + 1}: drivelab {statistics.median(rates):7.1f} samples/s, "
                  f"bare {statistics.median(bare[-len(rates):]):7.1f}")
        o, b = statistics.median(ours), statistics.median(bare)
        windows = f"median of {len(ours)} windows of {WINDOW} steps"
        print(f"drivelab trainer         : {o:8.1f} samples/s ({windows})")
        print(f"bare PyTorch loop        : {b:8.1f} samples/s ({len(bare)} windows)")
        print(f"trainer / bare           : {o / b:.3f}x   (goal >= 0.97x; best window vs best "
              f"{max(ours) / max(bare):.3f}x)")
        print(f"data-wait share of a step: {statistics.median(waits):.1%}   (goal < 5 %)")

        # One whole first epoch from a cold cache: every episode is decoded once, as when a
        # training run starts; a short window would charge the whole decode to a few batches.
        store = DatasetStore.open(dataset)
        zarr_rates, ram_rates = [], []
        history = cfg.model.history
        for _ in range(args.repeats):
            cold = EpisodeFrameDataset(
                store, "train", cfg.model.outputs, cfg.data.frames,
                history.signals if history else (), history.length if history else 0,
            )
            epoch = len(cold) // cfg.train.batch_size
            zarr_rates.append(loader_rate(cold, cfg, epoch))
            ram_rates.append(loader_rate(InRamFrames(cold), cfg, epoch))
        z, m = statistics.median(zarr_rates), statistics.median(ram_rates)
        print(f"loader from Zarr (cold)  : {z:8.1f} frames/s (median of {args.repeats}; one first "
              f"epoch, {epoch} batches, decode included)")
        print(f"same gather from RAM     : {m:8.1f} frames/s")
        print(f"Zarr / RAM               : {z / m:.3f}x   (goal >= 0.5x)")


if __name__ == "__main__":
    main()
