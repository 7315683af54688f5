"""What the trainer feeds the policy: checked datasets, their preprocessing, a resumable batch order.

Everything that can be wrong with the data (a missing split, a history signal the dataset does
not record, a crop larger than the frame: `drivelab.processor.check_fit`) is checked here, before
a run folder exists, so a bad combination of config and dataset costs one error line and leaves
nothing behind. The preprocessing itself (statistics, steps) is `drivelab.processor`'s.

The batch order is a pure function of (seed, epoch, batch in epoch): epoch ``e`` visits the
training samples in the permutation drawn from ``default_rng([seed, e])``, and DDP rank ``r``
takes its slice of each global batch. The trainer's data position is therefore just two numbers,
and a resumed run reads exactly the batches an uninterrupted run would have read. Frames travel
as uint8 and become floats on the device (crop, scale, resize), where that work is cheapest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from drivelab.config import ExperimentConfig
from drivelab.data.loader import EpisodeFrameDataset, collate_batch
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.processor.fit import DataSpec, PolicyNeeds, check_fit
from drivelab.processor.state import ProcessorState
from drivelab.processor.statistics import needs_moments, training_statistics


class InputError(DrivelabError):
    """The config asks for data the dataset cannot provide."""


@dataclass
class TrainInputs:
    """The opened dataset, its train/val samples and the preprocessing the policy trains with."""

    store: DatasetStore
    train: EpisodeFrameDataset
    val: EpisodeFrameDataset | None
    processor: ProcessorState  # stack, normalisation, history window, targets (train split)

    @property
    def history_sizes(self) -> dict[str, int]:
        """History signal -> values per step, as the dataset records them."""
        return dict(self.processor.history.sizes)

    def describe(self) -> dict[str, object]:
        """What a run records about its data in ``run.json`` (its statistics: ``processor.json``)."""
        return {
            "path": str(self.store.path),
            "frame_shape": list(self.store.meta.frame_shape),
            "train_samples": len(self.train),
            "val_samples": len(self.val) if self.val is not None else 0,
            "history_sizes": self.history_sizes,
        }


def open_inputs(config: ExperimentConfig) -> TrainInputs:
    """Open and check the dataset against the config; raise one `DrivelabError` line if unfit."""
    data = config.data
    store = DatasetStore.open(data.path)
    history = config.model.history
    history_sizes = check_fit(
        DataSpec.of_dataset(store), PolicyNeeds.of_config(config), who="the config", error=InputError
    )

    def dataset(split: str) -> EpisodeFrameDataset:
        return EpisodeFrameDataset(
            store,
            split,
            outputs=config.model.outputs,
            frames=data.frames,
            history_signals=history.signals if history else (),
            history_length=history.length if history else 0,
            delta_outputs=[h.output for h in config.model.heads if h.delta],
        )

    if not store.split_episodes(data.train_split):
        raise InputError(
            f"{data.path} has no {data.train_split!r} episodes to train on: collect more episodes"
        )
    train = dataset(data.train_split)
    if data.cache == "ram":
        train.preload("data.cache=ram")  # before loader workers fork: they share the pages
    val = None
    if data.val_split is not None:
        if not store.split_episodes(data.val_split):
            raise InputError(
                f"{data.path} has no {data.val_split!r} episodes to validate on: collect with "
                f"--val-episodes K, or set data.val_split=null to train without validation"
            )
        val = dataset(data.val_split)
    check_augmentation(config, store, history_sizes)
    moments = store.moments(train.episodes) if needs_moments(config) else {}
    statistics = training_statistics(config, moments, str(store.path))
    processor = ProcessorState.from_config(config, store.meta.frame_shape, history_sizes, statistics)
    return TrainInputs(store, train, val, processor)


def check_augmentation(config: ExperimentConfig, store: DatasetStore, history_sizes: dict[str, int]) -> None:
    """Fail now (one line) if ``data.augment`` names signals the dataset does not record."""
    if config.data.augment is None:
        return
    from drivelab.data.augment import resolve_flip_targets

    meta = store.meta
    resolve_flip_targets(
        config.data.augment.flip_negate,
        config.model.outputs,
        {a.name: a.size for a in meta.actions},
        list(history_sizes),
        {t.name: t.size for t in meta.telemetry},
    )
    aug = config.data.augment
    if aug.translate and aug.translate_steering and aug.translate_output not in config.model.outputs:
        raise InputError(f"data.augment.translate_output: {aug.translate_output!r} is not an "
                         f"output of the policy ({', '.join(config.model.outputs)})")


def fit_config_to_dataset(config: ExperimentConfig, path: Path) -> tuple[ExperimentConfig, str]:
    """The config with the dataset's history-signal sizes, and how its frames reach the policy.

    The policy always sees ``data.input_size`` (frames are cropped and resized on the device),
    so the dataset decides the signal sizes and the description, never the model's frame shape.
    """
    store = DatasetStore.open(path)
    height, width, channels = store.meta.frame_shape
    size = "x".join(map(str, config.data.input_size))
    crop = config.data.crop is not None
    if crop or (height, width) != tuple(config.data.input_size):
        source = f"dataset {height}x{width}x{channels},{' cropped,' if crop else ''} resized to {size} on the device"
    else:
        source = f"dataset {height}x{width}x{channels}"
    from drivelab.data.classes import with_dataset_classes

    config = with_dataset_classes(config, store)
    spec = DataSpec.of_dataset(store)
    sizes = check_fit(spec, PolicyNeeds.of_config(config), who="the config", error=InputError)
    return with_history_sizes(config, sizes), source


def with_history_sizes(config: ExperimentConfig, sizes: dict[str, int]) -> ExperimentConfig:
    """The config with every history signal's size written out, so config.yaml is complete."""
    if config.model.history is None or not sizes:
        return config
    history = config.model.history.model_copy(update={"signal_sizes": dict(sizes)})
    model = config.model.model_copy(update={"history": history})
    return config.model_copy(update={"model": model})


# ---------------------------------------------------------------------------- batch order
class EpochBatchSampler:
    """Index lists for one rank, epoch after epoch, starting at a saved data position.

    Epoch ``e`` is ``default_rng([seed, e]).permutation(n)`` cut into global batches of
    ``batch_size * world_size`` (the incomplete tail is dropped so every step has the same
    shape); rank ``r`` takes the ``r``-th ``batch_size`` slice of each global batch.
    """

    def __init__(
        self,
        samples: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_epoch: int = 0,
        start_batch: int = 0,
    ) -> None:
        self.samples = samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_epoch = start_epoch
        self.start_batch = start_batch
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = samples // self.global_batch
        if self.batches_per_epoch < 1:
            raise InputError(
                f"the training split has {samples} samples, fewer than one batch of "
                f"{self.global_batch} (train.batch_size {batch_size} x {world_size} device(s)): "
                "lower train.batch_size or collect more data"
            )

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.samples)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, batch = self.start_epoch, self.start_batch
        lo = self.rank * self.batch_size
        while True:
            order = self.permutation(epoch)
            for b in range(batch, self.batches_per_epoch):
                start = b * self.global_batch + lo
                yield order[start : start + self.batch_size].tolist()
            epoch, batch = epoch + 1, 0

    def position(self, batches_done: int) -> tuple[int, int]:
        """(epoch, batch in epoch) after ``batches_done`` steps in total."""
        return divmod(batches_done, self.batches_per_epoch)


def val_batches(samples: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Validation index lists for one rank; every rank gets the same number of batches.

    Sample ``i`` goes to rank ``i % world_size``; ranks short of a full last batch get padding
    index ``-1`` (masked out of the sums), so no rank waits alone in a collective.
    """
    mine = list(range(rank, samples, world_size))
    per_rank = -(-samples // world_size)
    mine += [-1] * (per_rank - len(mine))
    return [mine[i : i + batch_size] for i in range(0, per_rank, batch_size)]


class MaskedBatches(torch.utils.data.Dataset):
    """A dataset view where index ``-1`` yields a copy of sample 0 marked ``valid = 0``."""

    def __init__(self, base: EpisodeFrameDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        valid = torch.tensor([i >= 0 for i in indices], dtype=torch.float32)
        batch = self.base.__getitems__([max(i, 0) for i in indices])
        batch["valid"] = valid
        return batch


def worker_error_message(exc: DrivelabError) -> str:
    """The original one-line message of a `DrivelabError` re-raised from a DataLoader worker.

    torch re-raises a worker's exception in the main process as the same type, but with the
    message "Caught X in DataLoader worker process N. Original Traceback ...", which would turn
    a one-line data error into a traceback on the user's screen. The original message is the
    text after the last ``module.Class:`` line of that traceback.
    """
    text = str(exc)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return text
    cls = type(exc)
    prefix = f"{cls.__module__}.{cls.__qualname__}: "
    at = text.rfind(prefix)
    if at < 0:
        return text
    return text[at + len(prefix):].strip()


class OneLineErrorLoader(DataLoader):
    """A DataLoader whose workers' `DrivelabError`s keep their one-line message.

    A damaged chunk or a NaN found while a worker decodes an episode is a `DatasetError`
    naming the episode and the array; this restores that message (see
    `worker_error_message`) so the command line still prints one line.
    """

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        try:
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except DrivelabError as exc:
                    exc.args = (worker_error_message(exc),)
                    # without torch's frames, which hold the worker iterator (and processes)
                    raise exc.with_traceback(None) from None
                yield batch
        finally:
            del batches  # the worker processes stop with their iterator


def make_loader(
    dataset: torch.utils.data.Dataset,
    batches: Iterator[list[int]] | Sequence[list[int]] | EpochBatchSampler,
    workers: int,
    pin_memory: bool,
    seed: int,
) -> DataLoader:
    """A DataLoader that reads whole batches through ``__getitems__``.

    It gets its own seeded generator: a DataLoader otherwise draws its worker seed from the
    global torch RNG whenever an iterator starts, which would make training depend on how often
    validation ran.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return OneLineErrorLoader(
        dataset,
        batch_sampler=batches,  # type: ignore[arg-type]
        collate_fn=collate_batch,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        generator=generator,
    )
