"""Transfer learning: start a policy from other runs' weights (``init_from``).

Charles's model_0009 took the CNN of one run at batch 27,500 and the LSTM of another at batch
18,500, left everything else random, and trained it frozen and unfrozen. Here each
``model.init_from`` entry names a source (a run's checkpoint, a ``.safetensors`` file or timm's
pretrained weights) and globs over the policy's state-dict names; the copy is accounted for
exactly (copied / skipped / newly initialised / mismatched / missing) so a silent partial load
cannot pass for a transfer. Freezing what was copied (``model.freeze``, ``unfreeze_at``) is
`drivelab.models.freezing`; the glob language both share is `drivelab.models.name_globs`.

Everything here refuses bad input before a run folder exists: a source run that does not exist,
a batch without a checkpoint (the nearest ones are listed), a glob that matches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drivelab.config import InitFromConfig, ModelConfig
from drivelab.errors import DrivelabError
from drivelab.models.backbones import hub_or_cache
from drivelab.models.name_globs import TransferError, glob_matches, matching, shown, top_level
from drivelab.runs.checkpoints import atomic_write_text, load_weights
from drivelab.runs.folder import parse_checkpoint_ref, resolve_checkpoint

__all__ = ["InitReport", "SourceReport", "initialise_from", "write_init_report"]

#: ``timm:<name>`` sources hold timm's own keys; unless renamed they go under the backbone.
TIMM_PREFIX = "timm:"
TIMM_DEFAULT_RENAME = {"": "backbone.body."}
#: File in the run folder holding the full init report.
INIT_REPORT_NAME = "init_report.json"


@dataclass
class SourceReport:
    """What one ``init_from`` entry did; names are the policy's (after renaming)."""

    source: str
    resolved: str
    modules: list[str]
    copied: list[str] = field(default_factory=list)
    copied_values: int = 0
    skipped: list[str] = field(default_factory=list)  # source tensors not selected by the globs
    missing: list[str] = field(default_factory=list)  # selected policy tensors absent in the source
    mismatched: list[str] = field(default_factory=list)  # "name source [..] vs policy [..]"
    unexpected: list[str] = field(default_factory=list)  # selected source tensors the policy lacks

    def line(self) -> str:
        parts = [f"copied {len(self.copied)} tensors ({self.copied_values:,} values)"]
        parts.append(f"skipped {len(self.skipped)}")
        for label, names in (("missing", self.missing), ("mismatched", self.mismatched),
                             ("unexpected", self.unexpected)):
            if names:
                parts.append(f"{label} {len(names)} ({shown(names)})")
        return f"{self.resolved} [{', '.join(self.modules)}]: " + ", ".join(parts)


@dataclass
class InitReport:
    """Exact accounting of a transfer: every policy tensor is copied or newly initialised."""

    sources: list[SourceReport]
    fresh: list[str]
    fresh_values: int
    total_tensors: int
    total_values: int

    @property
    def copied_tensors(self) -> int:
        return sum(len(s.copied) for s in self.sources)

    @property
    def copied_values(self) -> int:
        return sum(s.copied_values for s in self.sources)

    def lines(self) -> list[str]:
        """The concise report `drivelab train` prints."""
        lines = [f"init from {s.line()}" for s in self.sources]
        lines.append(
            f"init: {self.copied_tensors} of {self.total_tensors} tensors copied "
            f"({self.copied_values:,} of {self.total_values:,} values), {len(self.fresh)} newly "
            f"initialised ({self.fresh_values:,} values: {top_level(self.fresh) or 'none'})"
        )
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "sources": [vars(s) for s in self.sources],
            "fresh": self.fresh,
            "counts": {
                "tensors": self.total_tensors,
                "values": self.total_values,
                "copied_tensors": self.copied_tensors,
                "copied_values": self.copied_values,
                "fresh_tensors": len(self.fresh),
                "fresh_values": self.fresh_values,
            },
        }


def write_init_report(run: Any, report: InitReport) -> None:
    """Keep the report in the run: ``init_report.json`` in full, the counts in ``run.json``."""
    import json

    record = report.to_json()
    atomic_write_text(run.path / INIT_REPORT_NAME, json.dumps(record, indent=2) + "\n")
    status = run.read_status().get("status", "created")
    run.write_status(status, init_from=record["counts"])


def _rename(key: str, rename: Mapping[str, str]) -> str:
    """Replace the longest matching source prefix (``""`` matches every key)."""
    best = max((p for p in rename if key.startswith(p)), key=len, default=None)
    return key if best is None else rename[best] + key[len(best):]


def _resolve_run_source(source: str, runs_root: Path | None) -> tuple[str, dict[str, torch.Tensor]]:
    """``<run>[@batch]`` -> (description, weights); the run may be given relative to the root."""
    path, batch = parse_checkpoint_ref(source)
    if not path.is_dir() and runs_root is not None and (runs_root / path).is_dir():
        path = runs_root / path
    ref = f"{path}@{batch}" if batch is not None else str(path)
    run, found, weights = resolve_checkpoint(ref, runs_root)
    return f"{run.path}@{found}", load_weights(weights)


def _timm_weights(name: str) -> dict[str, torch.Tensor]:
    """timm's pretrained weights for ``name`` (downloaded by timm; fails clearly offline)."""
    import timm

    if not timm.is_model(name.partition(".")[0]) or not timm.is_model_pretrained(name):
        raise TransferError(f"timm publishes no pretrained weights named {name!r}")
    try:
        with hub_or_cache():
            model = timm.create_model(name, pretrained=True, num_classes=0)
    except (OSError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise TransferError(
            f"cannot download timm weights {name!r} (no network? {first}); save them as a "
            f".safetensors file and use it as the source with rename {{'': 'backbone.body.'}}"
        ) from None
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_source(
    entry: InitFromConfig, runs_root: Path | None
) -> tuple[str, dict[str, torch.Tensor], dict[str, str]]:
    """(description, source tensors, rename map) of one ``init_from`` entry."""
    source = entry.source
    if source.startswith(TIMM_PREFIX):
        name = source[len(TIMM_PREFIX):]
        return source, _timm_weights(name), entry.rename or dict(TIMM_DEFAULT_RENAME)
    if source.endswith(".safetensors"):
        path = Path(source)
        if not path.is_file():
            raise TransferError(f"weights file not found: {source!r}")
        return str(path), load_weights(path), entry.rename
    description, weights = _resolve_run_source(source, runs_root)
    return description, weights, entry.rename


def _select(
    entry: InitFromConfig,
    description: str,
    weights: Mapping[str, torch.Tensor],
    rename: Mapping[str, str],
    target: Mapping[str, torch.Tensor],
) -> tuple[SourceReport, dict[str, torch.Tensor]]:
    """Match one source against the policy: the report and the tensors to copy."""
    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in weights.items():
        new = _rename(key, rename)
        if new in renamed:
            raise TransferError(f"rename maps both {origin[new]!r} and {key!r} to {new!r}")
        renamed[new], origin[new] = tensor, key
    for glob in entry.modules:
        if not any(glob_matches(name, glob) for name in target):
            raise TransferError(
                f"module glob {glob!r} matches nothing in the policy; it has {top_level(target)}"
            )
        if not any(glob_matches(name, glob) for name in renamed):
            hint = " (use rename to map its names)" if rename == {} else ""
            raise TransferError(
                f"module glob {glob!r} matches nothing in {description}; it has "
                f"{top_level(renamed)}{hint}"
            )
    wanted = matching(target, entry.modules)
    offered = set(matching(renamed, entry.modules))
    report = SourceReport(entry.source, description, list(entry.modules))
    report.skipped = [name for name in renamed if name not in offered]
    copies: dict[str, torch.Tensor] = {}
    for name in wanted:
        if name not in offered:
            report.missing.append(name)
        elif renamed[name].shape != target[name].shape:
            report.mismatched.append(
                f"{name} source {list(renamed[name].shape)} vs policy {list(target[name].shape)}"
            )
        else:
            copies[name] = renamed[name]
            report.copied.append(name)
            report.copied_values += renamed[name].numel()
    report.unexpected = sorted(offered - set(target))
    return report, copies


def initialise_from(
    config: ModelConfig, policy: nn.Module, runs_root: Path | None = None
) -> InitReport | None:
    """Copy ``config.init_from`` into ``policy`` (fresh init elsewhere); None without entries.

    Every source is read and checked before any tensor is copied, so a failure leaves the policy
    as built.
    """
    if not config.init_from:
        return None
    target = policy.state_dict()
    reports: list[SourceReport] = []
    planned: dict[str, torch.Tensor] = {}
    claimed: dict[str, int] = {}
    for index, entry in enumerate(config.init_from):
        where = f"model.init_from.{index}"
        try:
            description, weights, rename = load_source(entry, runs_root)
            report, copies = _select(entry, description, weights, rename, target)
        except DrivelabError as exc:
            raise TransferError(f"{where}: {exc}") from None
        problems = [
            f"{len(names)} {label} ({shown(names)})"
            for label, names in (("missing in the source", report.missing),
                                 ("of another shape", report.mismatched),
                                 ("not in the policy", report.unexpected))
            if names
        ]
        if problems and entry.strict:
            raise TransferError(
                f"{where}: {description} does not fit {entry.modules}: {'; '.join(problems)}; "
                "fix the globs/rename or set strict: false to copy what fits"
            )
        twice = [name for name in copies if name in claimed]
        if twice:
            raise TransferError(
                f"{where}: {shown(twice)} already come from model.init_from.{claimed[twice[0]]}; "
                "make the module globs disjoint"
            )
        claimed.update(dict.fromkeys(copies, index))
        planned.update(copies)
        reports.append(report)
    with torch.no_grad():
        for name, tensor in planned.items():
            target[name].copy_(tensor.to(dtype=target[name].dtype))
    fresh = [name for name in target if name not in planned]
    return InitReport(
        sources=reports,
        fresh=fresh,
        fresh_values=sum(target[name].numel() for name in fresh),
        total_tensors=len(target),
        total_values=sum(t.numel() for t in target.values()),
    )
