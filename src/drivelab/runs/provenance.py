"""Where a run came from: its dataset (and a checksum of it), its init sources, the code version.

Charles's pages say which weights a transfer-learning model started from and the kkelchte notes
tie every curve to a dataset; months later "which data was v3 trained on, and was it the same
store as v5?" must have an answer that does not depend on memory. The trainer records this
once, in ``run.json``, when a new run starts.

The dataset checksum is deliberately cheap: a hash over the store's root attributes and each
committed episode's index, length and attributes (which include per-episode pixel and signal
moments), not over the frame bytes. It changes when episodes are added, removed, re-split or
re-recorded, and costs a few small JSON reads even for a store of millions of frames.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from drivelab.data.store import DatasetStore


def dataset_checksum(store: DatasetStore) -> str:
    """``sha256:<hex>`` over the store's metadata and its committed episodes (see module doc)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(store.attrs, sort_keys=True, default=str).encode())
    for episode in store.episodes():
        record = {"index": episode.index, "length": episode.length, "attrs": episode.attrs}
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    return f"sha256:{digest.hexdigest()}"


def code_version() -> dict[str, Any]:
    """drivelab's package version and, when the source is a git checkout, its commit.

    ``dirty`` says uncommitted changes were present, i.e. the commit alone does not reproduce
    the code. Anything that fails (no git, not a checkout) yields ``None``: provenance is a
    record, never a reason for training to stop.
    """
    try:
        version: str | None = metadata.version("drivelab")
    except metadata.PackageNotFoundError:
        version = None
    source = Path(__file__).resolve().parent
    top = _git(source, "rev-parse", "--show-toplevel")
    # an installed copy inside some other repository (a venv in a project) is not our checkout
    commit = _git(source, "rev-parse", "HEAD") if top and (Path(top) / "src" / "drivelab").is_dir() else None
    dirty = None
    if commit is not None:
        status = _git(source, "status", "--porcelain", "--untracked-files=no")
        dirty = bool(status) if status is not None else None
    return {"drivelab": version, "git_commit": commit, "git_dirty": dirty}


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def init_sources(model_config: Any) -> list[Any]:
    """The checkpoints a run's weights started from (``model.init_from``), if the config has any.

    Read defensively: transfer learning may not be part of every config schema version, and a
    pretrained backbone file is an init source too.
    """
    sources: list[Any] = []
    dumped = model_config.model_dump(mode="json") if hasattr(model_config, "model_dump") else {}
    init_from = dumped.get("init_from")
    if isinstance(init_from, list):
        sources += init_from
    elif init_from:
        sources.append(init_from)
    pretrained = (dumped.get("backbone") or {}).get("pretrained")
    if pretrained is True:
        sources.append({"source": "timm pretrained weights", "parts": ["backbone"]})
    elif isinstance(pretrained, str) and pretrained:
        sources.append({"source": pretrained, "parts": ["backbone"]})
    return sources


def run_provenance(config: Any, store: DatasetStore) -> dict[str, Any]:
    """What ``run.json`` records under ``provenance`` when a run is created."""
    return {
        "config": "config.yaml",
        "dataset": {"path": str(Path(store.path).resolve()), "checksum": dataset_checksum(store),
                    "episodes": len(store.episodes())},
        # the world it was trained in: the verbs that drive the run default to it (`runs.world`)
        "env": store.meta.world_name(),
        "init_sources": init_sources(config.model),
        "code": code_version(),
    }
