"""Figures -> plain words, per head: each finding names the figure and the threshold behind it.

The rules (thresholds from `DiagnoseConfig`, see `docs/diagnose.md`):

- frames' share of the permutation effect < ``frames_share_min`` with a history branch: the
  head relies on its history. When the history group it relies on most is a past *action*
  (steering, accel_brake: what the car just did), "relies on the history — copycat risk"; when
  it is a state such as speed, "relies on <signal> rather than the road — shortcut risk"
  (a speed shortcut is the inertia mechanism, which the standing-start test then checks);
  otherwise "relies on the frames". When no group's permutation raises the loss at all (all
  shares 0: an undertrained head), there is no reliance to name: "no input measurably moves its
  loss", not flagged;
- the policy's action explained by the last action with R² >= ``copy_r2_max``: "copycat:
  its action is mostly the last action";
- the previous-action probe: the last action decoded from the joint features better than from
  the frame features alone by >= ``probe_gap_max`` (R²): the history hands the heads the
  last action (Wen et al.'s copycat signature);
- closed loop, score with blank frames >= ``blank_score_ratio_max`` x the normal score:
  "drives as well with blank frames — not looking at the road" (whole policy); read only when
  the normal score reaches ``blank_min_score``, since a ratio of two near-zero scores is noise;
- more than ``inertia_failures_max`` failed starts or restarts: "inertia: fails to start on
  k of N tracks" (whole policy).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from drivelab.config.diagnose_section import DiagnoseConfig
from drivelab.diagnose.closed_loop import BLANK_FRAMES, ClosedLoopAB
from drivelab.diagnose.inertia import InertiaReport
from drivelab.diagnose.probe import CopyBaseline, ProbeResult
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


def _reliance_finding(reliance: list[GroupReliance], actions: set[str], config: DiagnoseConfig) -> Finding:
    share = next((g.share for g in reliance if g.group == FRAMES), 0.0)
    figure = "frames' share of the permutation effect"
    history = [g for g in reliance if g.group != FRAMES]
    if not history or share >= config.frames_share_min:
        return Finding("relies on the frames", False, figure, share, config.frames_share_min)
    top = max(history, key=lambda g: g.share)
    if top.share <= 0:  # nothing raises the loss when scrambled: no reliance to name, on speed or else
        return Finding("no input measurably moves its loss — too little trained to tell", False, figure, share,
                       config.frames_share_min)
    if top.group in actions:
        text = f"relies on the history ({top.group}, a past action) — copycat risk"
    else:
        text = f"relies on {top.group} rather than the road — shortcut risk"
    return Finding(text, True, figure, share, config.frames_share_min)


def probe_gap(probe: ProbeResult, output: str) -> float | None:
    """Joint-feature R² minus frame-feature R² of the last action (no frame features: the joint R²)."""
    joint = probe.joint_r2.get(output)
    if joint is None or math.isnan(joint):
        return None
    frames = probe.frames_r2.get(output, float("nan"))
    return joint - (0.0 if math.isnan(frames) else max(frames, 0.0))


def head_findings(reliance: list[GroupReliance], copy: CopyBaseline | None, gap: float | None,
                  actions: set[str], config: DiagnoseConfig) -> list[Finding]:
    findings = [_reliance_finding(reliance, actions, config)]
    if copy is not None and not math.isnan(copy.policy_copy_r2) and copy.policy_copy_r2 >= config.copy_r2_max:
        findings.append(Finding("copycat: its action is mostly the last action", True,
                                "R² of its action by the last action", copy.policy_copy_r2, config.copy_r2_max))
    if gap is not None and gap >= config.probe_gap_max:
        findings.append(Finding("its features carry the last action far beyond what the frames show — copycat risk",
                                True, "probe R² joint minus frames", gap, config.probe_gap_max))
    return findings


def _blank_finding(ab: ClosedLoopAB, config: DiagnoseConfig) -> Finding | None:
    normal = float(ab.variants["normal"]["score_mean"])
    if normal < config.blank_min_score:
        return Finding("drives too poorly for the blank-frames A/B to tell", False,
                       "normal driving score", normal, config.blank_min_score)
    ratio = ab.ratio(BLANK_FRAMES)
    if math.isnan(ratio):
        return None
    blind = ratio >= config.blank_score_ratio_max
    text = ("drives as well with blank frames — not looking at the road" if blind
            else "drives worse with blank frames — looks at the road")
    return Finding(text, blind, "blank-frames score / normal score", ratio, config.blank_score_ratio_max)


def _inertia_finding(inertia: InertiaReport, config: DiagnoseConfig) -> Finding:
    n = len(inertia.tracks)
    failed = inertia.failed_starts + inertia.failed_restarts
    flagged = failed > config.inertia_failures_max
    text = (f"inertia: fails to start on {inertia.failed_starts} of {n} tracks and to restart after "
            f"{inertia.failed_restarts} of {inertia.stops} forced stops" if flagged
            else f"starts on {n} of {n} tracks and restarts after {inertia.stops} of {inertia.stops} forced stops")
    return Finding(text, flagged, f"failed starts of {n + inertia.stops}", failed, config.inertia_failures_max)


def policy_findings(ab: ClosedLoopAB | None, inertia: InertiaReport | None, config: DiagnoseConfig) -> list[Finding]:
    findings = []
    blank = None if ab is None else _blank_finding(ab, config)
    if blank is not None:
        findings.append(blank)
    if inertia is not None and inertia.tracks:
        findings.append(_inertia_finding(inertia, config))
    return findings


def verdicts(reliance: dict[str, list[GroupReliance]], copies: dict[str, CopyBaseline], probe: ProbeResult,
             actions: set[str], ab: ClosedLoopAB | None, inertia: InertiaReport | None,
             config: DiagnoseConfig) -> dict[str, list[Finding]]:
    """Per head (and ``policy`` for whole-policy findings), the findings in reading order.

    ``actions``: the dataset's action names; a history signal of that name is the last action.
    """
    out = {o: head_findings(r, copies.get(o), probe_gap(probe, o), actions, config) for o, r in reliance.items()}
    whole = policy_findings(ab, inertia, config)
    if whole:
        out[POLICY] = whole
    return out


def verdict_dict(found: dict[str, list[Finding]]) -> dict[str, list[dict]]:
    return {k: [asdict(f) for f in v] for k, v in found.items()}
