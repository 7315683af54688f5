"""The experiment config: loading, overrides, the resolved dump, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drivelab.config import (
    ConfigError,
    ExperimentConfig,
    SGDConfig,
    dump_config,
    load_config,
    parse_config,
)
from drivelab.errors import DrivelabError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name != "studies")  # studies: sweep specs


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def error_line(data: dict, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, overrides or [])
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_shipped_configs_load_and_round_trip(tmp_path: Path) -> None:
    assert {p.name for p in SHIPPED} >= {
        "model_0004_inceptionresnetv2.yaml",
        "model_0008_irv2_data_td.yaml",
        "pilotnet.yaml",
        "tiny_net.yaml",
    }
    for path in SHIPPED:
        config = load_config(path)
        dumped = tmp_path / f"{path.stem}.resolved.yaml"
        dumped.write_text(dump_config(config), encoding="utf-8")
        assert load_config(dumped) == config, path


def test_defaults_are_resolved_in_the_dump() -> None:
    config = parse_config({"line": "demo"})
    resolved = yaml.safe_load(dump_config(config))
    assert resolved["model"]["backbone"] == {
        "name": "pilotnet",
        "pretrained": False,
        "pool": "flatten",
    }
    assert [h["loss"] for h in resolved["model"]["heads"]] == ["mse", "mse"]
    assert resolved["train"]["max_batches"] == 10_000
    assert resolved["train"]["optimizer"]["name"] == "adam"
    assert config.frame_shape == (3, 96, 96)


def test_load_with_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "line": "model_0004_inceptionresnetv2",
            "model": {"heads": [{"output": "steering"}, {"output": "accel_brake"}]},
        },
    )
    config = load_config(
        path,
        [
            "train.lr=0.01",
            "train.lr=1e-2",  # PyYAML reads 1e-2 as text; the schema still makes it a float
            "model.backbone.name=resnet18",
            "model.neck=[512, 256]",
            "model.heads.steering.weight=2",
            "model.heads.1.loss=l1",
            "train.optimizer=sgd",
            "data.frames=3",
            "model.history.signals=[speed, purpose]",
            "model.history.signal_sizes.purpose=2",
        ],
    )
    assert config.train.lr == pytest.approx(0.01)
    assert config.model.backbone.name == "resnet18"
    assert config.model.backbone.pool == "avg"
    assert config.model.neck == [512, 256]
    assert config.model.heads[0].weight == 2.0
    assert config.model.heads[1].loss == "l1"
    assert isinstance(config.train.optimizer, SGDConfig)
    assert config.frame_shape == (9, 96, 96)
    assert config.model.history is not None
    assert config.model.history.step_size == 3
    assert (
        parse_config(
            {"line": "x", "model": {"history": {"signals": ["speed"]}}}, ["model.history=null"]
        ).model.history
        is None
    )


def test_bins_centres_and_edges() -> None:
    head = {"output": "steering", "kind": "classification", "bins": [-0.9, 0.0, 0.9]}
    config = parse_config({"line": "x", "model": {"heads": [{**head, "low": -0.9, "high": 0.9}]}})
    bins = config.model.heads[0].bins
    assert bins is not None
    assert bins.values() == [-0.9, 0.0, 0.9]
    assert bins.boundaries() == pytest.approx([-0.45, 0.45])
    assert config.model.heads[0].loss == "ce"
    assert config.model.heads[0].size == 3
    edges = {**head, "bins": {"edges": [-1.0, -0.3, 0.3, 1.0]}}
    bins = parse_config({"line": "x", "model": {"heads": [edges]}}).model.heads[0].bins
    assert bins is not None
    assert bins.values() == pytest.approx([-0.65, 0.0, 0.65])
    assert bins.boundaries() == [-0.3, 0.3]


@pytest.mark.parametrize(
    ("data", "overrides", "expected"),
    [
        (  # unknown key, with a suggestion and the allowed names
            {"line": "x", "model": {"backbone": {"nmae": "resnet18"}}},
            [],
            ["model.backbone.nmae", "did you mean 'name'", "pretrained"],
        ),
        ({"line": "x", "modle": {}}, [], ["modle", "did you mean 'model'"]),
        (  # an optimizer option that belongs to another optimizer
            {"line": "x", "train": {"optimizer": {"name": "adam", "nesterov": True}}},
            [],
            ["train.optimizer.nesterov", "unknown key", "betas"],
        ),
        ({"line": "x"}, ["train.lr=fast"], ["train.lr", "valid number", "'fast'"]),
        ({"line": "x"}, ["train.batch_size=0"], ["train.batch_size", "greater than 0"]),
        ({"line": "x"}, ["data.normalization=zscore"], ["data.normalization", "'shifted'"]),
        ({"line": "x"}, ["train.optimizer=rmsprop"], ["train.optimizer.name", "'sgd'", "'adamw'"]),
        ({"line": "x"}, ["train.devices=many"], ["train.devices", "'auto'"]),
        (  # unknown backbone name, with close timm names
            {"line": "x"},
            ["model.backbone.name=resnet19"],
            ["model.backbone.name", "'resnet19'", "did you mean", "'resnet18'"],
        ),
        (  # an unknown pretrained tag of a known timm architecture
            {"line": "x"},
            ["model.backbone.name=resnet18.a1_in1"],
            ["model.backbone.name", "'resnet18.a1_in1k'"],
        ),
        (  # bins that do not cover the action range
            {
                "line": "x",
                "model": {
                    "heads": [{"output": "steering", "kind": "classification", "bins": [-0.5, 0.5]}]
                },
            },
            [],
            ["model.heads.0.bins", "[-0.5, 0.5]", "[-1.0, 1.0]"],
        ),
        (
            {"line": "x", "model": {"heads": [{"output": "steering", "kind": "classification"}]}},
            [],
            ["model.heads.0.bins", "needs bins"],
        ),
        (
            {"line": "x", "model": {"heads": [{"output": "steering", "loss": "ce"}]}},
            [],
            ["model.heads.0.loss", "'mse'"],
        ),
        (
            {"line": "x", "model": {"heads": [{"output": "steering", "widths": "half"}]}},
            [],
            ["model.heads.0.widths", "'quarter'"],
        ),
        ({"line": "x"}, ["model.neck=[32]"], ["model.heads.0.widths", "64"]),
        (  # missing weights file
            {"line": "x"},
            ["model.backbone.pretrained=missing/weights.safetensors"],
            ["model.backbone.pretrained", "file not found"],
        ),
        (
            {"line": "x"},
            ["model.backbone.pretrained=true"],
            ["model.backbone.pretrained", "built-in backbone 'pilotnet'"],
        ),
        ({"line": "x"}, ["train.epochs=3", "train.max_batches=5"], ["train.epochs", "only one"]),
        (
            {"line": "x"},
            ["train.schedule=cosine", "train.schedule.min_lr=0.5"],
            ["train.schedule.min_lr", "below lr"],
        ),
        (
            {"line": "x", "model": {"history": {"signals": ["speed"], "signal_sizes": {"x": 2}}}},
            [],
            ["model.history.signal_sizes", "x not in signals"],
        ),
        ({}, [], ["line", "missing"]),
        ({"line": "x"}, ["train.lr"], ["train.lr", "KEY=VALUE"]),
        ({"line": "x"}, ["model.heads.steering.weight=2"], ["model.heads", "whole list"]),
        (
            {"line": "x", "model": {"heads": [{"output": "steering"}]}},
            ["model.heads.brake.weight=2"],
            ["model.heads.brake", "steering"],
        ),
    ],
)
def test_mistakes_give_one_line_naming_the_key(
    data: dict, overrides: list[str], expected: list[str]
) -> None:
    message = error_line(data, overrides)
    for fragment in expected:
        assert fragment in message, message


def test_missing_and_broken_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("line: x\nmodel: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)


def test_pretrained_path_is_checked(tmp_path: Path) -> None:
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"")
    config = parse_config({"line": "x"}, [f"model.backbone.pretrained={weights}"])
    assert config.model.backbone.pretrained == weights
    wrong = tmp_path / "weights.pt"
    wrong.write_bytes(b"")
    assert ".safetensors" in error_line({"line": "x"}, [f"model.backbone.pretrained={wrong}"])


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, DrivelabError)
    assert ExperimentConfig.model_config["extra"] == "forbid"
