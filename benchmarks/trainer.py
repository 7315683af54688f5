"""Trainer throughput per speed setting, against the bare loop and the hardware's limit.

    python benchmarks/trainer.py [--dataset PATH] [--batches 60] [--repeats 3] [--quick]

1. samples/s of `drivelab.train.train` on `configs/carracing/pilotnet.yaml` for each speed
   setting — fp32, fp32 + channels_last, bf16-mixed, bf16-mixed + channels_last, and the best
   of those + torch.compile — next to a bare hand-written loop with the same setting (same
   model, seed, data, batch size, optimizer, loss, clipping, loader) in this process. Goal:
   drivelab / bare >= 0.97x in every row, read from the median of the per-repeat ratios (each
   repeat runs the two loops back to back, so a drift of the machine's speed cancels in it).
   On a CPU without AMX / AVX-512 BF16, bf16 is emulated (that is why `train.precision: auto`
   picks fp32 there); its rows are measured over fewer batches and marked.
2. The hardware limit of the same sitting: FLOPs per sample of forward + backward (PyTorch's
   FlopCounterMode) and the measured 2048x2048 matmul peak in fp32 and bf16, so every
   samples/s is also a share of "peak GFLOP/s / FLOP per sample".
3. torch.compile: its one-off compile time and after how many batches it pays for itself.
4. The loader: samples/s from Zarr (cold, one first epoch with decode; then warm), from the
   RAM cache (`data.cache: ram`) with workers and in-process, and the data-wait share of a
   training step for each (goal: loader >= 2x the trainer, data wait < 5 %).

Medians over repeats; the machine may be shared and noisy: read the ratios. Without
``--dataset`` a small real CarRacing dataset is collected first (about a minute).
"""

from __future__ import annotations

import argparse
import functools
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
from drivelab.data.batch_loader import make_loader
from drivelab.data.loader import EpisodeFrameDataset, collate_batch
from drivelab.data.store import DatasetStore
from drivelab.models import build_policy
from drivelab.order.epochs import EpochBatchSampler
from drivelab.precision import bf16_support
from drivelab.processor.pipeline import normalize_frames
from drivelab.runs.metrics import read_metrics
from drivelab.train import train
from drivelab.train.inputs import open_inputs
from drivelab.train.trainer import seed_everything

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "carracing" / "pilotnet.yaml"
WINDOW = 10  # steps per timing window


def drivelab_run(cfg: ExperimentConfig, root: Path, allow_emulated: bool = False) -> tuple[list[float], list[float]]:
    """(samples/s, data-wait share) of each of the trainer's log windows after the first.

    ``allow_emulated``: train in bf16 even where the CPU lacks bf16 units (the trainer itself
    would fall back to fp32 there), to measure what the fallback avoids.
    """
    if allow_emulated:
        import drivelab.train.speed as speed

        saved = speed.bf16_support
        speed.bf16_support = lambda device: (True, "benchmark: emulated bf16 measured on purpose")
        try:
            result = train(cfg, runs_root=root)
        finally:
            speed.bf16_support = saved
    else:
        result = train(cfg, runs_root=root)
    rows = [r for r in read_metrics(result.run.metrics_path) if "samples_per_s" in r][1:]
    return [r["samples_per_s"] for r in rows], [r["data_wait_share"] for r in rows]


def to_input_size(frames: torch.Tensor, cfg: ExperimentConfig) -> torch.Tensor:
    """Frames resized to ``data.input_size`` as drivelab's input pipeline does (on the device,
    bilinear with antialiasing) when the dataset's frames are another size."""
    size = tuple(cfg.data.input_size)
    if tuple(frames.shape[-2:]) == size:
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)


def bare_run(cfg: ExperimentConfig, batches: int, bf16: bool, channels_last: bool,
             compile_model: bool = False) -> tuple[list[float], float]:
    """The same training written by hand: (samples/s of each window after the first, s of step 1)."""
    inputs = open_inputs(cfg)
    cfg = inputs.config
    seed_everything(cfg.seed)
    model = build_policy(cfg.model, cfg.frame_shape, inputs.history_sizes)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    forward = torch.compile(model) if compile_model else model
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
    first_step = 0.0
    window_start = time.perf_counter()
    while done < batches:
        for batch in loader:
            t0 = time.perf_counter()
            frames = to_input_size(batch["frames"].float().div_(255.0).sub_(0.5), cfg)
            # the loader's [B, C, H, W] frames are HWC in memory: make the layout explicit both ways
            frames = frames.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                predictions = forward(frames, batch["history"])
                loss = sum(
                    F.mse_loss(predictions[o].float(), batch[f"target/{o}"][:, 0]) for o in outputs
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            done += 1
            if done == 1:
                first_step = time.perf_counter() - t0
                window_start = time.perf_counter()  # step 1 (and any compile) is not a rate
            elif (done - 1) % WINDOW == 0:
                now = time.perf_counter()
                rates.append(WINDOW * cfg.train.batch_size / (now - window_start))
                window_start = now
            if done >= batches:
                break
    return rates[1:] or rates, first_step


def flops_per_sample(cfg: ExperimentConfig, dataset: Path) -> float:
    """Forward + backward FLOPs of one sample (PyTorch's FlopCounterMode, batch 16)."""
    from torch.utils.flop_counter import FlopCounterMode

    inputs = open_inputs(cfg)
    cfg = inputs.config
    model = build_policy(cfg.model, cfg.frame_shape, inputs.history_sizes)
    batch = collate_batch(inputs.train.__getitems__(list(range(16))))
    frames = to_input_size(batch["frames"].float() / 255.0, cfg)
    with FlopCounterMode(display=False) as counter:
        predictions = model(frames, batch["history"])
        sum(v.float().pow(2).mean() for v in predictions.values()).backward()
    return counter.get_total_flops() / 16


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a size x size matmul in ``dtype`` (median of ``repeats``)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times) / 1e9


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


def loader_rate(dataset: torch.utils.data.Dataset, cfg: ExperimentConfig, batches: int, workers: int) -> float:
    """Samples/s delivered by the trainer's DataLoader set-up over ``batches`` batches."""
    sampler = EpochBatchSampler(len(dataset), cfg.train.batch_size, cfg.seed)
    loader = make_loader(dataset, sampler, workers, False, cfg.seed)
    started = time.perf_counter()
    for n, batch in enumerate(loader, start=1):
        normalize_frames(batch["frames"], "shifted")  # touch the data as the trainer would
        if n >= batches:
            break
    return batches * cfg.train.batch_size / (time.perf_counter() - started)


VARIANTS = {  # label -> (train.precision, train.channels_last, train.compile)
    "fp32": ("32-true", False, False),
    "fp32 + channels_last": ("32-true", True, False),
    "bf16-mixed": ("bf16-mixed", False, False),
    "bf16-mixed + channels_last": ("bf16-mixed", True, False),
}


def variant_config(base: list[str], precision: str, channels_last: bool, compiled: bool,
                   batches: int) -> ExperimentConfig:
    return load_config(CONFIG, [*base, f"train.precision={precision}",
                                f"train.channels_last={str(channels_last).lower()}",
                                f"train.compile={str(compiled).lower()}", f"train.max_batches={batches}",
                                f"train.checkpoint_every={batches}"])


def data_wait(base: list[str], tmp: Path, cache: str, workers: int, precision: str, batches: int) -> tuple[float, float]:
    """(samples/s, data-wait share) of the trainer with this loader set-up."""
    cfg = load_config(CONFIG, [*base, f"data.cache={cache}", f"data.workers={workers}",
                               f"train.precision={precision}", f"train.max_batches={batches}",
                               f"train.checkpoint_every={batches}"])
    rates, shares = drivelab_run(cfg, tmp / f"wait_{cache}_{workers}_{precision}")
    return statistics.median(rates), statistics.median(shares)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, help="Existing dataset (else a small one is collected).")
    ap.add_argument("--batches", type=int, default=60, help="Training batches per run.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="Loader worker processes (trainer rows).")
    ap.add_argument("--batch-size", type=int, help="Default: the config's train.batch_size.")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 40 batches, no compile row.")
    ap.add_argument("--rows-only", action="store_true", help="Only the setting rows: no compile row, no loader.")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.batches = 1, 40

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dataset = args.dataset
        if dataset is None:
            from drivelab.data.collect import CollectPlan, collect

            dataset = tmp / "bench.zarr"
            print("collecting a small CarRacing dataset (4 episodes x 300 steps) ...")
            collect(dataset, CollectPlan(env="carracing", seed=42, noise=0.1, max_steps=300),
                    episodes=4, workers=2, val_episodes=1)
        if args.batch_size is None:
            args.batch_size = load_config(CONFIG).train.batch_size
        base = [
            f"data.path={dataset}",
            "data.balance.scheme=none",  # the bare loop shuffles plainly too
            f"data.workers={args.workers}",
            "data.cache=none",
            f"train.batch_size={args.batch_size}",
            f"train.log_every={WINDOW}",
            "train.val_every=null",
            "data.val_split=null",  # the bare loop validates nothing either
            "train.warmup_batches=0",
        ]
        native, why = bf16_support("cpu")
        print(f"{CONFIG.name}: batch {args.batch_size}, {args.workers} loader workers, {args.batches} "
              f"batches per run, {args.repeats} repeat(s), {torch.get_num_threads()} torch threads, "
              f"{os.cpu_count()} cores; {why}; dataset {dataset}")
        fp32_peak, bf16_peak = matmul_peak(torch.float32), matmul_peak(torch.bfloat16, repeats=1 if not native else 5)
        flops = flops_per_sample(load_config(CONFIG, base), dataset)
        print(f"hardware: 2048^2 matmul {fp32_peak:.0f} GFLOP/s fp32, {bf16_peak:.1f} GFLOP/s bf16"
              f"{'' if native else ' (emulated)'}; policy {flops / 1e6:.1f} MFLOP per sample "
              f"(forward + backward) -> limit {fp32_peak * 1e9 / flops:.0f} samples/s at the fp32 peak")

        rows: dict[str, tuple[float, float]] = {}
        for label, (precision, channels_last, _) in VARIANTS.items():
            bf16 = precision.startswith("bf16")
            batches = args.batches if native or not bf16 else max(2 * WINDOW + 2, args.batches // 4)
            ours: list[float] = []
            bare: list[float] = []
            paired: list[float] = []  # each repeat's drivelab / bare, the two run back to back
            for r in range(args.repeats):
                cfg = variant_config(base, precision, channels_last, False, batches)
                run_bare = functools.partial(bare_run, cfg, batches, bf16, channels_last)
                if r % 2:  # alternate which loop goes first: a drift in load hits both alike
                    bare_rates = run_bare()[0]
                ours_rates = drivelab_run(cfg, tmp / f"runs_{len(rows)}_{r}", allow_emulated=bf16 and not native)[0]
                if not r % 2:
                    bare_rates = run_bare()[0]
                ours += ours_rates
                bare += bare_rates
                paired.append(statistics.median(ours_rates) / statistics.median(bare_rates))
            o, b = statistics.median(ours), statistics.median(bare)
            rows[label] = (o, b)
            peak = bf16_peak if bf16 else fp32_peak
            print(f"{label + ('' if native or not bf16 else ' (emulated)'):36s}: drivelab {o:7.1f} samples/s, "
                  f"bare {b:7.1f}, ratio {o / b:.3f}x (paired per repeat: median {statistics.median(paired):.3f}x "
                  f"of {', '.join(f'{x:.3f}' for x in paired)}), {o / rows.get('fp32', (o, b))[0]:.2f}x fp32; "
                  + (f"{o * flops / 1e9:.0f} GFLOP/s = {o * flops / 1e9 / peak:.0%} of this sitting's "
                     f"{'bf16' if bf16 else 'fp32'} matmul peak" if native or not bf16 else
                     f"{o * flops / 1e9:.0f} GFLOP/s (no bf16 peak to compare: emulated)"))

        best = max(rows, key=lambda k: rows[k][0])
        if args.rows_only:
            return
        if not args.quick:
            precision, channels_last, _ = VARIANTS[best]
            bf16 = precision.startswith("bf16")
            cfg = variant_config(base, precision, channels_last, True, args.batches)
            eager_rate = rows[best][1]
            compiled, first = bare_run(cfg, args.batches, bf16, channels_last, compile_model=True)
            _, eager_first = bare_run(cfg, 2 * WINDOW + 2, bf16, channels_last)
            c = statistics.median(compiled)
            ours = drivelab_run(cfg, tmp / "runs_compiled")[0]
            per_batch_gain = args.batch_size / eager_rate - args.batch_size / c
            compile_s = first - eager_first
            pays = f"pays after {compile_s / per_batch_gain:.0f} batches" if per_batch_gain > 0 else "never pays"
            print(f"{best + ' + compile':36s}: drivelab {statistics.median(ours):7.1f} samples/s, bare {c:7.1f}, "
                  f"ratio {statistics.median(ours) / c:.3f}x, {c / eager_rate:.2f}x eager; compile "
                  f"{compile_s:.1f} s, {pays}")

        # The loader, alone: one first epoch from a cold cache (every episode decoded once, as
        # when a run starts), then a warm epoch; the RAM cache through workers and in-process.
        store = DatasetStore.open(dataset)
        cfg = load_config(CONFIG, base)
        history = cfg.model.history
        rates: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            view = EpisodeFrameDataset(store, "train", cfg.model.outputs, cfg.data.frames,
                                       history.signals if history else (), history.length if history else 0)
            epoch = len(view) // cfg.train.batch_size
            rates.setdefault("Zarr, cold (first epoch)", []).append(loader_rate(view, cfg, epoch, args.workers))
            rates.setdefault("Zarr, warm (in-process LRU)", []).append(loader_rate(view, cfg, epoch, 0))
            view.preload()
            rates.setdefault(f"RAM cache, {args.workers} workers", []).append(loader_rate(view, cfg, epoch, args.workers))
            rates.setdefault("RAM cache, in-process", []).append(loader_rate(view, cfg, epoch, 0))
            rates.setdefault("bare numpy gather (baseline)", []).append(loader_rate(InRamFrames(view), cfg, epoch, 0))
        trainer_best = rows[best][0]
        for label, values in rates.items():
            m = statistics.median(values)
            print(f"loader {label:30s}: {m:9.0f} samples/s = {m / trainer_best:5.1f}x the best trainer row")
        fast = VARIANTS[best][0]
        for cache, workers in (("none", args.workers), ("ram", args.workers), ("ram", 0)):
            rate, share = data_wait(base, tmp, cache, workers, fast, args.batches)
            print(f"training {fast}, data.cache={cache}, {workers} workers: {rate:7.1f} samples/s, "
                  f"data wait {share:.1%} of a step (goal < 5 %)")


if __name__ == "__main__":
    main()
