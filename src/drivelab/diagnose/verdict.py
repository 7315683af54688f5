"""Figures -> plain words, per head: each finding names the figure and the threshold behind it.

The rules (thresholds from `DiagnoseConfig`, see `docs/diagnose.md`):

- frames' share of the permutation effect < ``frames_share_min`` with a history branch:
  "relies on the history — copycat risk"; otherwise "relies on the frames";
- the policy's action explained by the last action with R² >= ``copy_r2_max``: "copycat:
  repeats the last action";
- closed loop, score with blank frames >= ``blank_score_ratio_max`` x the normal score:
  "drives as well with blank frames — not looking at the road" (whole policy);
- more than ``inertia_failures_max`` failed starts or restarts: "inertia: fails to start on
  k of N tracks" (whole policy).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from drivelab.config.diagnose_section import DiagnoseConfig
from drivelab.diagnose.closed_loop import BLANK_FRAMES, ClosedLoopAB
from drivelab.diagnose.inertia import InertiaReport
from drivelab.diagnose.probe import CopyBaseline
from drivelab.diagnose.reliance import FRAMES, GroupReliance

POLICY = "policy"  # findings about the whole policy rather than one head


@dataclass
class Finding:
    """One verdict line: the words, whether it is a failure, the figure and its threshold."""

    text: str
    flagged: bool
    figure: str
    value: float
    threshold: float


def head_findings(reliance: list[GroupReliance], copy: CopyBaseline | None, has_history: bool,
                  config: DiagnoseConfig) -> list[Finding]:
    share = next((g.share for g in reliance if g.group == FRAMES), 0.0)
    findings = []
    if has_history and share < config.frames_share_min:
        top = max((g for g in reliance if g.group != FRAMES), key=lambda g: g.share)
        findings.append(Finding(f"relies on the history ({top.group}) — copycat risk", True,
                                "frames' share of the permutation effect", share, config.frames_share_min))
    else:
        findings.append(Finding("relies on the frames", False, "frames' share of the permutation effect",
                                share, config.frames_share_min))
    if copy is not None and not math.isnan(copy.policy_copy_r2) and copy.policy_copy_r2 >= config.copy_r2_max:
        findings.append(Finding("copycat: its action is mostly the last action", True,
                                "R² of its action by the last action", copy.policy_copy_r2, config.copy_r2_max))
    return findings


def policy_findings(ab: ClosedLoopAB | None, inertia: InertiaReport | None, config: DiagnoseConfig) -> list[Finding]:
    findings = []
    if ab is not None:
        ratio = ab.ratio(BLANK_FRAMES)
        if not math.isnan(ratio):
            blind = ratio >= config.blank_score_ratio_max
            text = ("drives as well with blank frames — not looking at the road" if blind
                    else "drives worse with blank frames — looks at the road")
            findings.append(Finding(text, blind, "blank-frames score / normal score", ratio,
                                    config.blank_score_ratio_max))
    if inertia is not None and inertia.tracks:
        n = len(inertia.tracks)
        failed = inertia.failed_starts + inertia.failed_restarts
        attempts = n + inertia.stops
        flagged = failed > config.inertia_failures_max
        text = (f"inertia: fails to start on {inertia.failed_starts} of {n} tracks and to restart after "
                f"{inertia.failed_restarts} of {inertia.stops} forced stops" if flagged
                else f"starts on {n} of {n} tracks and restarts after {inertia.stops} of {inertia.stops} forced stops")
        findings.append(Finding(text, flagged, f"failed starts of {attempts}", failed, config.inertia_failures_max))
    return findings


def verdicts(reliance: dict[str, list[GroupReliance]], copies: dict[str, CopyBaseline], has_history: bool,
             ab: ClosedLoopAB | None, inertia: InertiaReport | None,
             config: DiagnoseConfig) -> dict[str, list[Finding]]:
    """Per head (and ``policy`` for whole-policy findings), the findings in reading order."""
    out = {o: head_findings(r, copies.get(o), has_history, config) for o, r in reliance.items()}
    whole = policy_findings(ab, inertia, config)
    if whole:
        out[POLICY] = whole
    return out


def verdict_dict(found: dict[str, list[Finding]]) -> dict[str, list[dict]]:
    return {k: [asdict(f) for f in v] for k, v in found.items()}
