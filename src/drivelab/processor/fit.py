"""One answer to "does this data fit this policy": `check_fit`.

The data side is a `DataSpec` (frame shape, action and telemetry names with their values per
step), which a Zarr dataset's meta and a gymnasium env's specs both give; the policy side is a
`PolicyNeeds` (the outputs it predicts, its delta heads, its history signals and sizes, the
frames it reads), which a config or a run's `ProcessorState` gives. The trainer, the loader, the
model factory, offline evaluation and the closed-loop runtime all ask here, each raising its own
error type, so a misfit reads the same wherever it is found: one line naming what differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from drivelab.config import CropConfig, ExperimentConfig
from drivelab.errors import DrivelabError
from drivelab.processor.state import ProcessorState


class FitError(DrivelabError):
    """The data and the policy do not fit (raised when the asker names no error type)."""


class NamedSignal(Protocol):
    """A signal spec: `drivelab.sim.base.SignalSpec`, as datasets and envs describe signals."""

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class DataSpec:
    """What a data source offers: frames [H, W, C] and named signals -> values per step.

    ``source`` names it in messages (a dataset path, an env id); ``None`` is a bare list of
    sizes handed over by a caller (the model factory), with no frames.
    """

    source: str | None
    frame_shape: tuple[int, int, int] | None = None
    actions: Mapping[str, int] = field(default_factory=dict)
    telemetry: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        source: str,
        frame_shape: Iterable[int],
        actions: Iterable[NamedSignal],
        telemetry: Iterable[NamedSignal],
    ) -> DataSpec:
        """From signal specs (``meta.actions`` of a dataset, ``env.action_specs`` of an env)."""
        return cls(
            source,
            tuple(frame_shape),  # type: ignore[arg-type]
            {s.name: s.size for s in actions},
            {s.name: s.size for s in telemetry},
        )

    @classmethod
    def of_dataset(cls, store: Any) -> DataSpec:
        """A `drivelab.data.store.DatasetStore`: its path, frames, actions and telemetry."""
        meta = store.meta
        return cls.of(str(store.path), meta.frame_shape, meta.actions, meta.telemetry)

    @classmethod
    def of_env(cls, env: Any) -> DataSpec:
        """A `drivelab.sim.DrivingEnv`: its id, frames, action and telemetry specs."""
        return cls.of(env.env_id, env.frame_shape, env.action_specs, env.telemetry_specs)


@dataclass(frozen=True)
class PolicyNeeds:
    """What a policy reads from its data: the policy side of `check_fit`.

    ``history`` maps each history signal (in order) to the values per step the policy was
    built for, or ``None`` where any size fits (the dataset decides before training).
    ``trained_shape`` is the source frame shape a trained run saw; ``rgb`` asks for RGB frames
    and ``crop`` that the crop leaves something of them.
    """

    outputs: tuple[str, ...] = ()
    delta_outputs: tuple[str, ...] = ()
    history: Mapping[str, int | None] = field(default_factory=dict)
    trained_shape: tuple[int, int, int] | None = None
    rgb: bool = False
    crop: CropConfig | None = None

    @classmethod
    def of_config(cls, config: ExperimentConfig, exact_sizes: bool = False) -> PolicyNeeds:
        """A config about to train: RGB frames it can crop; sizes only where the config gives them.

        ``exact_sizes`` holds every signal to the config's size (1 unless ``signal_sizes`` says
        otherwise), as a built policy is.
        """
        history = config.model.history
        sizes: dict[str, int | None] = {}
        if history is not None:
            for name in history.signals:
                sizes[name] = history.signal_size(name) if exact_sizes else history.signal_sizes.get(name)
        return cls(
            outputs=tuple(config.model.outputs),
            delta_outputs=tuple(h.output for h in config.model.heads if h.delta),
            history=sizes,
            rgb=True,
            crop=config.data.crop,
        )

    @classmethod
    def of_processor(cls, state: ProcessorState) -> PolicyNeeds:
        """A trained run: its outputs, delta heads, recorded history sizes and source frames."""
        return cls(
            outputs=state.targets.outputs,
            delta_outputs=tuple(state.targets.delta),
            history={s: state.history.sizes[s] for s in state.history.signals},
            trained_shape=state.frames.source_shape,
        )


def check_fit(
    spec: DataSpec,
    needs: PolicyNeeds,
    who: str = "the policy",
    error: type[DrivelabError] = FitError,
) -> dict[str, int]:
    """Refuse (one ``error`` line) data that does not fit; return the history signals' sizes.

    ``who`` names the policy side in the message (a run label, ``model.heads``). Checked in
    this order: outputs, delta heads, frames, history.
    """
    where = spec.source or "the data"
    actions = spec.actions
    missing = [o for o in needs.outputs if actions.get(o) != 1]
    if missing:
        listing = ", ".join(f"{n}[{s}]" for n, s in actions.items())
        raise error(
            f"{where} has no one-value action {missing}: no action for the output(s) {missing} "
            f"of {who} (its actions: {listing or 'none'})"
        )
    lacking = [o for o in needs.delta_outputs if o not in spec.telemetry]
    if lacking:
        raise error(
            f"{where} does not record the last executed action of the delta head(s) {lacking} of "
            f"{who} as telemetry of the same name (its telemetry: {_listing(spec)})"
        )
    if spec.frame_shape is not None:
        _check_frames(spec, needs, who, error)
    return _check_history(spec, needs, who, error)


def _listing(spec: DataSpec) -> str:
    return ", ".join(f"{n}[{s}]" for n, s in spec.telemetry.items()) or "none"


def _check_frames(spec: DataSpec, needs: PolicyNeeds, who: str, error: type[DrivelabError]) -> None:
    assert spec.frame_shape is not None
    height, width, channels = spec.frame_shape
    if needs.trained_shape is not None and tuple(needs.trained_shape) != spec.frame_shape:
        raise error(
            f"{who} was trained on {list(needs.trained_shape)} frames, {spec.source} gives "
            f"{list(spec.frame_shape)}: use data recorded the same way"
        )
    if needs.rgb and channels != 3:
        raise error(f"{spec.source} holds {channels}-channel frames; policies read RGB (3)")
    crop = needs.crop
    if crop is not None and (crop.top + crop.bottom >= height or crop.left + crop.right >= width):
        raise error(
            f"data.crop (top {crop.top}, bottom {crop.bottom}, left {crop.left}, right "
            f"{crop.right}) leaves nothing of the dataset's {height}x{width} frames: crop less"
        )


def _check_history(
    spec: DataSpec, needs: PolicyNeeds, who: str, error: type[DrivelabError]
) -> dict[str, int]:
    available = spec.telemetry
    where = spec.source or "the data"
    missing = [s for s in needs.history if s not in available]
    if missing and spec.source is None:  # sizes handed over by a caller: nothing to name
        known = ", ".join(available) or "none"
        raise error(f"model.history.signals: {missing[0]!r} is not a recorded signal; available: {known}")
    if missing:
        wanted = ", ".join(s if needs.history[s] is None else f"{s}[{needs.history[s]}]" for s in missing)
        raise error(
            f"model.history.signals: {', '.join(missing)} not recorded in {spec.source}, which "
            f"lacks the history telemetry of {who} ({wanted}): history signal(s) {missing} "
            f"cannot be read (its telemetry: {_listing(spec)})"
        )
    for name, wanted_size in needs.history.items():
        if wanted_size is not None and wanted_size != available[name]:
            raise error(
                f"model.history.signal_sizes.{name}: {wanted_size}, but {where} records "
                f"{available[name]} value(s) per step"
            )
    return {name: int(available[name]) for name in needs.history}
