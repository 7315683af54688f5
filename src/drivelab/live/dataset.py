"""The live loop's dataset: created (or reopened for appending) before any actor starts.

A live run appends to ``data.path``: a new dataset is created with the env's signals, an existing
one must hold the same env (`drivelab.data.collect.open_for_collection` checks it, the same way
``collect --append`` does). Track slots continue after the highest track seed already recorded,
so no track is collected twice and none reaches the held-out range.
"""

from __future__ import annotations

from pathlib import Path

from drivelab.config import ExperimentConfig
from drivelab.config.live_section import LiveConfig
from drivelab.data.collect import open_for_collection
from drivelab.data.locks import check_creatable
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.sim import make_env, make_expert

CHUNK_FRAMES = 32


def open_live_dataset(config: ExperimentConfig, live: LiveConfig, resuming: bool) -> DatasetStore:
    """The dataset the collectors append to (made now if missing; refused if it cannot be)."""
    path = Path(config.data.path)
    if config.data.val_split is not None and config.data.val_split != config.data.train_split:
        has_val = path.exists() and DatasetStore.open(path).split_episodes(config.data.val_split)
        if not has_val:
            raise DrivelabError(f"collectors commit to the train split, so {path} has no "
                                f"{config.data.val_split!r} episodes: set data.val_split=null")
    if resuming and not path.exists():
        raise DrivelabError(f"the run's dataset {path} is gone: a live run resumes only on its own data")
    if not path.exists():
        check_creatable(path)
    probe = make_env(live.env, max_steps=live.max_steps)
    try:
        make_expert(probe)
        return open_for_collection(path, probe, path.exists(), CHUNK_FRAMES)
    finally:
        probe.close()


def next_slot(path: Path | str, seed: int = 0) -> int:
    """The first slot whose track (``seed + slot``) is past every track already in the dataset."""
    seeds = [int(e.attrs["track_seed"]) for e in DatasetStore.open(path).episodes() if "track_seed" in e.attrs]
    return max(0, max(seeds) + 1 - seed) if seeds else 0
