"""The live loop's dataset: checked before Ray starts, created (or reopened) before any actor.

A new live or dagger run trains on everything in ``data.path``, so a dataset that already holds
episodes (an earlier run's, policy-driven ones included) is refused unless the user says
``--append``; then what was there is reported (episodes, frames and where they came from), and
the run's summary counts them. ``--resume`` (and `drivelab demo --dagger`, which continues its
own behaviour-cloning run) continues on the run's own dataset. An existing dataset must hold the
same env (`drivelab.data.collect.open_for_collection` checks it, the way ``collect --append``
does). Track slots continue after the highest track seed already recorded, so no track is
collected twice and none reaches the held-out range.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from drivelab.config import ExperimentConfig
from drivelab.config.live_section import LiveConfig
from drivelab.data.collect import open_for_collection
from drivelab.data.inspect import episode_source
from drivelab.data.locks import check_creatable
from drivelab.data.store import DatasetStore
from drivelab.errors import DrivelabError
from drivelab.sim import make_env, make_expert

CHUNK_FRAMES = 32


def check_live_dataset(config: ExperimentConfig, resuming: bool, append: bool) -> None:
    """Everything about ``data.path`` that can be refused without creating anything."""
    path = Path(config.data.path)
    if config.data.val_split is not None and config.data.val_split != config.data.train_split:
        has_val = path.exists() and DatasetStore.open(path).split_episodes(config.data.val_split)
        if not has_val:
            raise DrivelabError(f"collectors commit to the train split, so {path} has no "
                                f"{config.data.val_split!r} episodes: set data.val_split=null")
    if resuming:
        if append:
            raise DrivelabError("--append is for a new run: a resumed run continues on its own dataset")
        if not path.exists():
            raise DrivelabError(f"the run's dataset {path} is gone: a live run resumes only on its own data")
        return
    if append and not path.exists():
        raise DrivelabError(f"--append given but {path} does not exist: drop --append to create it")
    if path.exists() and not append and DatasetStore.open(path).episodes():
        raise DrivelabError(f"{path} already holds {describe_episodes(DatasetStore.open(path))}; a new run "
                            "would train on them too: pass --append to add to it, or set data.path "
                            "to a new dataset")
    if not path.exists():
        check_creatable(path)


def open_live_dataset(config: ExperimentConfig, live: LiveConfig, resuming: bool,
                      append: bool = False) -> DatasetStore:
    """The dataset the collectors append to (made now if missing; refused if it cannot be)."""
    check_live_dataset(config, resuming, append)
    path = Path(config.data.path)
    probe = make_env(live.env, max_steps=live.max_steps)
    try:
        make_expert(probe)
        return open_for_collection(path, probe, path.exists(), CHUNK_FRAMES, name=live.env)
    finally:
        probe.close()


def describe_episodes(store: DatasetStore) -> str:
    """"N episodes, F frames: a expert-driven from collect (f frames), b policy-driven ..."."""
    episodes = store.episodes()
    frames: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for info in episodes:
        source = episode_source(info.attrs, str(store.attrs.get("source") or ""))
        counts[source] += 1
        frames[source] += info.length
    parts = [f"{counts[s]} {s} ({frames[s]} frames)" for s in sorted(counts, key=lambda s: (-counts[s], s))]
    total = f"{len(episodes)} episode{'' if len(episodes) == 1 else 's'}, {sum(frames.values())} frames"
    return total + (": " + ", ".join(parts) if parts else "")


def existing_episodes(config: ExperimentConfig) -> str | None:
    """What ``data.path`` holds before this run adds to it (None: nothing there yet)."""
    path = Path(config.data.path)
    return describe_episodes(DatasetStore.open(path)) if path.exists() else None


def next_slot(path: Path | str, seed: int = 0) -> int:
    """The first slot whose track (``seed + slot``) is past every track already in the dataset."""
    seeds = [int(e.attrs["track_seed"]) for e in DatasetStore.open(path).episodes() if "track_seed" in e.attrs]
    return max(0, max(seeds) + 1 - seed) if seeds else 0
