"""The sweep spec (``SWEEP.yaml``): a base config, a grid of config keys, seeds, resources.

kkelchte ran every study as a grid (learning rate x optimizer x normalisation x dataset size x 3
seeds) and reported mean and std over the seeds. Here that grid is a typed file, validated like
an experiment config: every cell's config is built and checked (`parse_config`) before Ray
starts, so a bad key or value in the grid costs one error line naming the cell, not a cluster
full of failed trials.

Cells are the product of the named ``variants`` (hand-made override sets, for arms that are not
a product, e.g. "normalised output") and the ``grid`` axes; each cell runs once per seed. A
trial is one (cell, seed) pair and becomes an ordinary run folder of the cell's model line.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from drivelab.config import ConfigError, ExperimentConfig
from drivelab.config.base import NonNegativeFloat, PositiveInt, Seed, _field_error, _Section
from drivelab.config.loading import _config_error, apply_overrides, parse_config
from drivelab.config.yaml_text import read_yaml_file
from drivelab.errors import DrivelabError
from drivelab.seeds import HELD_OUT_SEED

#: Metrics a sweep can rank cells by (closed-loop ones need ``evaluate``).
CLOSED_LOOP_METRICS = ("score", "reward", "laps")
#: Ray Tune's resources must be above zero; a trial always takes at least a slice of a core.
TRIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Names made from grid values become folder and file names (``runs/<line>/<line>_v1``,
#: ``trials/<cell>.seed<N>.json``), which a file system caps at 255 bytes: a longer value text or
#: cell name is cut and ends in a hash of the whole, so distinct values keep distinct names.
VALUE_TEXT_MAX = 40
CELL_NAME_MAX = 120
#: The base config's line + "." + cell name; the run folder adds ``_v<k>``.
LINE_MAX = 200


class SweepError(DrivelabError):
    """A sweep spec, folder or resume that cannot be used; one line saying what to do."""


class TrialResources(_Section):
    """What one trial reserves from Ray: its cores set its thread count (see `sweep.resources`)."""

    cpus: Annotated[float, Field(gt=0)] = 1.0
    gpus: NonNegativeFloat = 0.0


class SweepEvaluation(_Section):
    """Closed-loop driving of every trial's last checkpoint on held-out tracks."""

    #: null: the world each trial's run was trained in (its dataset's), as `drivelab eval RUN` drives
    env: str | None = None
    episodes: PositiveInt = 10
    first_seed: Annotated[int, Field(ge=HELD_OUT_SEED)] = HELD_OUT_SEED
    max_steps: PositiveInt = 1000
    workers: PositiveInt = 1


class SweepMetric(_Section):
    """The number cells are ranked by: a validation key (``val/loss``) or a driving one."""

    name: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    #: ``best`` ranks by a trial's best validation value, ``final`` by its last one.
    at: Literal["final", "best"] = "final"


class SweepVariant(_Section):
    """A named set of overrides: one arm of a study that is not an axis of the grid."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    overrides: dict[str, Any] = Field(default_factory=dict)


class SweepSpec(_Section):
    """A whole study: which base config, what varies, how often, on what, ranked how."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    base: Path
    overrides: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variants: list[SweepVariant] = Field(default_factory=list)
    seeds: PositiveInt | list[Seed] = 3
    trial: TrialResources = Field(default_factory=TrialResources)
    max_concurrent: PositiveInt | None = None
    evaluate: SweepEvaluation | None = None
    metric: SweepMetric = Field(default_factory=SweepMetric)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_in_range(cls, value: Any) -> Any:
        """A listed seed out of range gets its own line (the union's errors would name neither)."""
        for index, seed in enumerate(value if isinstance(value, list) else []):
            if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**32:
                raise PydanticCustomError("located", "{message}", {
                    "path": [index], "message": f"{_short_number(seed)} is not a seed: seeds are whole "
                    "numbers from 0 to 4294967295 (2**32 - 1)"})
        return value

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if not self.grid and not self.variants:
            raise _field_error("grid", "nothing varies: give grid axes (e.g. train.lr: [0.001, 0.01]) "
                               "or variants")
        for key, values in self.grid.items():
            if not values:
                raise _field_error("grid", f"{key}: an axis needs at least one value")
            if key == "seed":
                raise _field_error("grid", "seed: use the top-level seeds: N (repeats of every cell)")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise _field_error("variants", f"variant names repeat: {names}")
        if isinstance(self.seeds, list) and len(set(self.seeds)) != len(self.seeds):
            raise _field_error("seeds", f"seeds repeat: {self.seeds}")
        if self.metric.name.split("/")[-1] in CLOSED_LOOP_METRICS and self.evaluate is None:
            raise _field_error("metric", f"{self.metric.name!r} is a driving metric: add an evaluate "
                               "section (episodes, first_seed) or rank by val/loss")
        return self

    def seed_values(self, base_seed: int) -> list[int]:
        """Training seeds: the listed ones, or ``seeds: N`` -> the base config's seed + 0..N-1."""
        return list(self.seeds) if isinstance(self.seeds, list) else [base_seed + i for i in range(self.seeds)]


def _short_number(value: int) -> str:
    """An integer as the user gave it, cut short (a 5000-digit seed is no error message)."""
    if abs(value) < 10**20:
        return str(value)
    return f"a {'negative ' if value < 0 else ''}{value.bit_length()}-bit number"


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its name (a model-line suffix) and the overrides that make it."""

    name: str
    overrides: tuple[str, ...]
    values: dict[str, Any]


@dataclass(frozen=True)
class Trial:
    """One cell trained with one seed: a run folder of the line ``<base line>.<cell>``."""

    cell: Cell
    seed: int
    line: str

    @property
    def name(self) -> str:
        return f"{self.cell.name}.seed{self.seed}"


@dataclass(frozen=True)
class SweepPlan:
    """The expanded, checked sweep: what every trial trains (a picklable value, sent once)."""

    spec: SweepSpec
    base_data: dict[str, Any]  # the base config's raw mapping (paths made absolute)
    cells: tuple[Cell, ...]
    trials: tuple[Trial, ...]

    def trial(self, name: str) -> Trial:
        for trial in self.trials:
            if trial.name == name:
                return trial
        raise SweepError(f"no trial {name!r} in sweep {self.spec.name!r}")

    def config(self, trial: Trial) -> ExperimentConfig:
        """The trial's experiment config: base + sweep overrides + cell + seed + line."""
        return parse_config(self.base_data, trial_overrides(self.spec, trial))


def _value_text(value: Any) -> str:
    """A value as it appears in a cell name: short, and a safe folder-name part."""
    if isinstance(value, float):  # 1e+09 -> 1e9, 1e-05 -> 1e-5 ('+' is no folder-name character)
        text = re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{value:g}")
    elif isinstance(value, list | dict):
        text = yaml.safe_dump(value, default_flow_style=True).strip()
    else:
        text = str(value)
    return _bounded(re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x", VALUE_TEXT_MAX, text)


def _bounded(name: str, limit: int, whole: str) -> str:
    """``name`` if it fits ``limit``, else its start and 8 hex digits of the sha256 of ``whole``."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(whole.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-._')}-{digest}"


def _override(key: str, value: Any) -> str:
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def expand_cells(spec: SweepSpec) -> list[Cell]:
    """Variants x grid, in file order; names from the variant and each axis' last key part."""
    variants = spec.variants or [None]
    axes = list(spec.grid.items())
    cells: list[Cell] = []
    for variant in variants:
        for combo in itertools.product(*(values for _, values in axes)):
            parts = [variant.name] if variant is not None else []
            overrides = [_override(k, v) for k, v in (variant.overrides.items() if variant else ())]
            values: dict[str, Any] = {"variant": variant.name} if variant is not None else {}
            for (key, _), value in zip(axes, combo, strict=True):
                parts.append(f"{key.split('.')[-1]}-{_value_text(value)}")
                overrides.append(_override(key, value))
                values[key] = value
            name = "_".join(parts)
            cells.append(Cell(_bounded(name, CELL_NAME_MAX, name), tuple(overrides), values))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise SweepError(f"two cells share the name {repeated[0]!r}: give grid values that differ "
                         "as text, or name variants apart")
    return cells


def trial_overrides(spec: SweepSpec, trial: Trial) -> list[str]:
    return [
        *(_override(k, v) for k, v in spec.overrides.items()),
        *trial.cell.overrides,
        f"seed={trial.seed}",
        f"line={trial.line}",
    ]


def read_spec(path: Path) -> tuple[SweepSpec, dict[str, Any]]:
    """Read and validate a spec file; relative ``base`` and ``data.path`` follow the spec's folder."""
    if not path.is_file():
        raise SweepError(f"sweep spec not found: {str(path)!r}")
    try:
        raw = read_yaml_file(path)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping (name, base, grid, seeds, ...)")
    return parse_spec(raw, path.parent, str(path))


def parse_spec(raw: dict[str, Any], folder: Path, where: str = "sweep") -> tuple[SweepSpec, dict[str, Any]]:
    """Validate a spec mapping; returns the spec (base made absolute) and its spec mapping."""
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SweepError(f"{where}: {_config_error(exc)}") from None
    base = spec.base if spec.base.is_absolute() else (folder / spec.base).resolve()
    spec = spec.model_copy(update={"base": base})
    return spec, spec.model_dump(mode="json")


def plan_sweep(spec: SweepSpec, overrides: list[str] | tuple[str, ...] = ()) -> SweepPlan:
    """Expand and check every trial's config now (one error line naming the cell), before Ray.

    ``overrides`` (``key=value`` from the command line) join the spec's own overrides.
    """
    if not spec.base.is_file():
        raise SweepError(f"base config not found: {str(spec.base)!r} (base: is relative to the spec file)")
    try:
        base_data = read_yaml_file(spec.base) or {}
    except ConfigError as exc:
        raise SweepError(f"base config: {exc}") from None
    if not isinstance(base_data, dict):
        raise SweepError(f"{spec.base}: expected a config mapping")
    try:
        base_data = apply_overrides(base_data, list(overrides))
        base = parse_config(base_data)
    except ConfigError as exc:
        raise SweepError(f"base config {spec.base.name}: {exc}") from None
    base_data = _absolute_data_path(base_data, spec.base.parent)
    cells = expand_cells(spec)
    trials = tuple(
        Trial(cell, seed, f"{base.line}.{cell.name}")
        for cell in cells
        for seed in spec.seed_values(base.seed)
    )
    for trial in trials:
        if not TRIAL_NAME.match(trial.line):
            raise SweepError(f"cell {trial.cell.name!r} does not make a model-line name")
        if len(trial.line) > LINE_MAX:
            raise SweepError(f"the model line {trial.line[:40]}... is {len(trial.line)} characters, "
                             f"over {LINE_MAX}: shorten the base config's line ({base.line[:40]}...)")
        try:
            parse_config(base_data, trial_overrides(spec, trial))
        except ConfigError as exc:
            raise SweepError(f"cell {trial.cell.name}: {exc}") from None
    return SweepPlan(spec, base_data, tuple(cells), trials)


def _absolute_data_path(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Trials run in Ray's working folders (or on other machines): no relative dataset paths.

    A relative ``data.path`` is taken from the current folder when it exists there (how `drivelab
    train` reads it), else from the base config's folder.
    """
    section = dict(data.get("data") or {})
    raw = section.get("path")
    if raw is None:
        return data
    path = Path(str(raw)).expanduser()
    if not path.is_absolute():
        path = (Path.cwd() / path) if (Path.cwd() / path).exists() else (folder / path)
    section["path"] = str(path.resolve())
    return {**data, "data": section}
