"""DataLoaders over `EpisodeFrameDataset`: whole batches, seeded workers, one-line worker errors.

Every reader of samples (the trainer, offline evaluation) loads the same way: a batch sampler
hands index lists to ``__getitems__`` (one vectorised gather per episode), the loader has its
own seeded generator, and a `DrivelabError` raised while a worker decodes an episode (a damaged
chunk, a NaN) keeps its one-line message instead of torch's worker traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from drivelab.data.augment import AugmentedFrames, BatchAugmenter, NumberedBatches
from drivelab.data.loader import collate_batch
from drivelab.errors import DrivelabError


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
    batches: Iterable[Any],
    workers: int,
    pin_memory: bool,
    seed: int,
    augmenter: BatchAugmenter | None = None,
    start: int = 0,
) -> DataLoader:
    """A DataLoader that reads whole batches through ``__getitems__``.

    It gets its own seeded generator: a DataLoader otherwise draws its worker seed from the
    global torch RNG whenever an iterator starts, which would make training depend on how often
    validation ran. With ``augmenter`` (`drivelab.data.augment.training_augmenter`) the batches
    come out augmented; each travels with its number (``start``: the batches done before this
    loader) so the worker that reads it seeds its augmentation with the number alone.
    """
    if augmenter is not None:
        dataset = AugmentedFrames(dataset, augmenter)
        batches = NumberedBatches(batches, start)
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
