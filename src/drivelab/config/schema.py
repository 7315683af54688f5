"""The typed experiment schema: the root config over the data, model and train sections.

Every knob of an experiment (data, policy architecture, training) is declared in a section with its type,
its default and its checks, so a bad value is caught when the YAML file is read, not hours into a
run. A mistake surfaces as a single :class:`ConfigError` line that names the key and says what is
allowed, because the person reading it is usually at a terminal with a half-written config open.

The resolved config (every default filled in) is what a run folder stores as ``config.yaml``;
:func:`dump_config` writes it and :func:`load_config` reads it back unchanged.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from drivelab.config.base import _Section
from drivelab.config.data_section import DataConfig
from drivelab.config.model_section import ModelConfig
from drivelab.config.train_section import TrainConfig


class ExperimentConfig(_Section):
    """One experiment: which model line it belongs to, its data, its policy and its training."""

    line: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    seed: int = 123
    notes: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """The policy's frame input [C, H, W]: stacked frames after crop and resize."""
        height, width = self.data.input_size
        return 3 * self.data.frames, height, width


