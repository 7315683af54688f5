"""Policies: backbones (timm + built-ins), the history branch, neck and heads, and summaries."""

from drivelab.models.backbones import BUILTIN_BACKBONES, build_backbone, load_backbone_weights
from drivelab.models.factory import build_policy
from drivelab.models.heads import action_to_bin, logits_to_action
from drivelab.models.history import AUX_PREFIX, HistoryBranch
from drivelab.models.policy import Policy
from drivelab.models.summary import (
    ParamCounts,
    Summary,
    count_parameters,
    render_summary,
    summarize,
    summarize_config,
)

__all__ = [
    "AUX_PREFIX",
    "BUILTIN_BACKBONES",
    "HistoryBranch",
    "ParamCounts",
    "Policy",
    "Summary",
    "action_to_bin",
    "build_backbone",
    "build_policy",
    "count_parameters",
    "load_backbone_weights",
    "logits_to_action",
    "render_summary",
    "summarize",
    "summarize_config",
]
