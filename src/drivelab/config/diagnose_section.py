"""The thresholds `drivelab diagnose` turns its figures into verdicts with.

A verdict is only as honest as the line it is drawn at, so every threshold is a named, typed,
documented field here (validated with the rest of the config, overridable with the same dotted
``diagnose.<key>=value`` overrides), and every verdict quotes the figure and the threshold that
triggered it. The defaults are the ones `docs/diagnose.md` measured the known cases with.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt

from drivelab.config.base import _Section


class DiagnoseConfig(_Section):
    """Copycat, shortcut and inertia tests: sampling sizes and verdict thresholds.

    Input reliance: ``frames_share_min`` is the smallest share of the total permutation effect
    (on a head's loss) the frames must carry for "relies on the frames"; below it, with a
    history branch, the head "relies on the history — copycat risk". ``copy_r2_max``: a head
    whose predictions the previous action alone explains with R² at or above this is flagged a
    copycat too, and so is one whose joint features decode the last action better than its
    frame features alone by ``probe_gap_max`` (R², the previous-action probe). Closed loop:
    ``blank_score_ratio_max`` flags a policy whose driving score with blank frames keeps at
    least this fraction of its normal score ("not looking at the road"), read only when the
    normal score reaches ``blank_min_score`` (a ratio of two near-zero scores is noise).
    Inertia: the car must exceed ``moving_speed`` (world units/s) within ``start_timeout_s``
    after a standing start and after a forced stop (braked to a halt ``stop_after_s`` into the
    track, held for ``stop_hold_s``); ``inertia_failures_max`` failed starts are tolerated.
    """

    bootstrap: PositiveInt = 200
    probe_ridge: float = Field(1e-2, gt=0)
    probe_max_samples: PositiveInt = 4000
    frames_share_min: float = Field(0.5, ge=0, le=1)
    copy_r2_max: float = Field(0.9, le=1)
    probe_gap_max: float = Field(0.45, gt=0)
    blank_score_ratio_max: float = Field(0.7, ge=0)
    blank_min_score: float = Field(0.2, ge=0, le=1)
    moving_speed: float = Field(2.0, gt=0)
    start_timeout_s: float = Field(3.0, gt=0)
    stop_after_s: float = Field(4.0, gt=0)
    stop_hold_s: float = Field(0.5, gt=0)
    inertia_failures_max: int = Field(0, ge=0)
