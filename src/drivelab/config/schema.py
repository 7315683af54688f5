"""The typed experiment schema: the root config over the data, model and train sections.

Every knob of an experiment (data, policy architecture, training) is declared in a section with its type,
its default and its checks, so a bad value is caught when the YAML file is read, not hours into a
run. A mistake surfaces as a single :class:`ConfigError` line that names the key and says what is
allowed, because the person reading it is usually at a terminal with a half-written config open.

The resolved config (every default filled in) is what a run folder stores as ``config.yaml``;
:func:`dump_config` writes it and :func:`load_config` reads it back unchanged.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from drivelab.config.base import Seed, _Section
from drivelab.config.data_section import DataConfig
from drivelab.config.diagnose_section import DiagnoseConfig
from drivelab.config.live_section import LiveConfig
from drivelab.config.model_section import ModelConfig
from drivelab.config.policy_section import POLICY_KINDS
from drivelab.config.train_section import TrainConfig


class ExperimentConfig(_Section):
    """One experiment: which model line it belongs to, its data, its policy and its training.

    ``task: driving`` (default) learns actions from demonstrations and drives in closed loop;
    ``task: classification`` learns image labels (GTSRB, seed 003) with the same models and
    loop: every head is ``kind: class``, there is no history branch, and evaluation is offline.
    """

    #: A folder name (``runs/<line>/<line>_v<k>``): file systems cap a name at 255 bytes.
    line: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)]
    task: Literal["driving", "classification"] = "driving"
    seed: Seed = 123
    notes: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    diagnose: DiagnoseConfig = Field(default_factory=DiagnoseConfig)
    #: `drivelab live` / `drivelab dagger`: collectors, driver mix, refresh cadence, player.
    live: LiveConfig | None = None

    @property
    def world_env(self) -> str | None:
        """The env this config names for its world (``live.env`` when set explicitly), else None:
        data of another world is refused; without it, any data's world is accepted."""
        live = self.live
        return live.env if live is not None and "env" in live.model_fields_set else None

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """The policy's frame input [C, H, W]: stacked frames after crop and resize."""
        height, width = self.data.input_size
        return 3 * self.data.frames, height, width

    @model_validator(mode="after")
    def _heads_fit_task(self) -> ExperimentConfig:
        """Class heads belong to the classification task and only they do."""
        for index, head in enumerate(self.model.heads):
            if head.predicts_labels != (self.task == "classification"):
                message = (
                    "a classification task predicts labels: use kind: class"
                    if self.task == "classification"
                    else "kind: class predicts image labels: set task: classification "
                    "(driving actions use kind: classification with bins)"
                )
                raise PydanticCustomError(
                    "located", "{message}", {"path": ["model", "heads", index, "kind"], "message": message}
                )
        if self.task == "classification" and self.model.history is not None:
            raise PydanticCustomError(
                "located",
                "{message}",
                {"path": ["model", "history"], "message": "a classification task has no telemetry history: remove it"},
            )
        return self

    @model_validator(mode="after")
    def _recurrent_needs_sequences(self) -> ExperimentConfig:
        """A recurrent policy trains on sequences and a frame policy on frames: say so up front."""
        mode = self.train.bptt.mode
        kind = POLICY_KINDS[self.model.kind_name]  # a known kind: ModelConfig checked it
        sequences, section = kind.sequences, f"model.{kind.section or 'kind'}"
        if sequences and mode == "none":
            raise PydanticCustomError(
                "located",
                "{message}",
                {
                    "path": ["train", "bptt", "mode"],
                    "message": f"{section} needs sequences: set train.bptt.mode to full, "
                    "window or sliding",
                },
            )
        if not sequences and mode != "none":
            raise PydanticCustomError(
                "located",
                "{message}",
                {
                    "path": ["train", "bptt", "mode"],
                    "message": f"{mode!r} trains a recurrent policy: add model.recurrent "
                    "(layers, hidden) or set train.bptt.mode=none",
                },
            )
        if mode != "none":
            balance = getattr(getattr(self.data, "balance", None), "scheme", "none")
            if balance != "none":
                raise PydanticCustomError(
                    "located",
                    "{message}",
                    {
                        "path": ["data", "balance", "scheme"],
                        "message": f"{balance!r} picks single frames, but train.bptt.mode={mode} "
                        "reads whole sequences in episode order: set data.balance.scheme=none",
                    },
                )
            if getattr(self.data, "augment", None) is not None:
                raise PydanticCustomError(
                    "located",
                    "{message}",
                    {
                        "path": ["data", "augment"],
                        "message": f"augmentation is not applied to sequences (train.bptt.mode="
                        f"{mode}) yet: remove data.augment",
                    },
                )
        return self


