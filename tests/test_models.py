"""Policies: backbones, weights files, the history branch, heads, assembly and summaries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from drivelab.config import (
    BackboneConfig,
    ConfigError,
    HeadConfig,
    HistoryConfig,
    ModelConfig,
    load_config,
    parse_config,
)
from drivelab.models import (
    Policy,
    build_backbone,
    build_policy,
    count_parameters,
    render_summary,
    summarize,
    summarize_config,
)
from drivelab.models.heads import action_to_bin, build_head, logits_to_action
from drivelab.models.history import HistoryBranch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Charles's model_0004 page (Keras summary) and the arithmetic in REFERENCE.md.
KERAS_TOTAL = 56_470_434
KERAS_NON_TRAINABLE = 60_544
DENSE_1536_1024 = 1_573_888
CHARLES_HEAD = 279_905
NECK_AND_HEADS = 2_133_698


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def model_config(**model: object) -> ModelConfig:
    return parse_config({"line": "test", "model": model}).model


# ------------------------------------------------------------------------------- backbones


@pytest.mark.parametrize(
    ("name", "size", "frames", "features"),
    [
        ("resnet18", (64, 64), 1, 512),
        ("resnet18", (64, 64), 3, 512),
        ("tiny", (128, 128), 1, 1024),
        ("tiny", (64, 96), 3, 1024),
        ("pilotnet", (96, 96), 1, 1600),
        ("pilotnet", (66, 200), 3, 1152),  # the paper's input gives its 1x18x64 map
    ],
)
def test_backbone_registry(name: str, size: tuple[int, int], frames: int, features: int) -> None:
    backbone = build_backbone(BackboneConfig(name=name), frames, size)
    assert backbone.num_features == features
    with torch.no_grad():
        out = backbone(torch.rand(2, 3 * frames, *size))
    assert out.shape == (2, features)


def test_tiny_net_matches_the_pilot_spec() -> None:
    backbone = build_backbone(BackboneConfig(name="tiny"), 1, (128, 128))
    assert backbone.fc.in_features == 20 * 20 * 20
    assert 8_000_000 < count_parameters(backbone).total < 8_300_000  # "tiny 8M params"


def test_pools_and_too_small_frames() -> None:
    pooled = build_backbone(BackboneConfig(name="pilotnet", pool="avg"), 1, (96, 96))
    assert pooled.num_features == 64
    flat = build_backbone(BackboneConfig(name="resnet18", pool="flatten"), 1, (64, 64))
    assert flat.num_features == 512 * 2 * 2
    assert flat(torch.rand(1, 3, 64, 64)).shape == (1, 2048)
    with pytest.raises(ConfigError, match=r"data\.input_size.*pilotnet"):
        build_backbone(BackboneConfig(name="pilotnet"), 1, (32, 32))


def test_pretrained_from_local_tiny_file(tmp_path: Path) -> None:
    source = build_backbone(BackboneConfig(name="tiny"), 1, (64, 64))
    path = tmp_path / "tiny.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = build_backbone(BackboneConfig(name="tiny", pretrained=path), 1, (64, 64))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    partial = {k: v for k, v in source.state_dict().items() if k != "fc.bias"}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    config = BackboneConfig(name="tiny", pretrained=tmp_path / "partial.safetensors")
    with pytest.raises(ConfigError, match=r"model\.backbone\.pretrained: .*1 missing \(fc\.bias\)"):
        build_backbone(config, 1, (64, 64))
    with pytest.raises(ConfigError, match="wrong shape"):
        build_backbone(BackboneConfig(name="tiny", pretrained=path), 1, (96, 96))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        build_backbone(BackboneConfig(name="tiny", pretrained=garbage), 1, (64, 64))


def test_pretrained_timm_file_drops_classifier_and_adapts_stacked_frames(tmp_path: Path) -> None:
    import timm

    reference = timm.create_model("resnet18", pretrained=False)  # with its ImageNet classifier
    path = tmp_path / "resnet18.safetensors"
    save_file(reference.state_dict(), str(path))
    config = BackboneConfig(name="resnet18", pretrained=path)

    single = build_backbone(config, 1, (64, 64))
    assert torch.equal(single.body.conv1.weight, reference.conv1.weight)
    stacked = build_backbone(config, 3, (64, 64))  # 9 input channels from 3-channel weights
    expected = reference.conv1.weight.repeat(1, 3, 1, 1) / 3
    assert torch.allclose(stacked.body.conv1.weight, expected)
    assert torch.equal(stacked.body.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)


def test_pretrained_download_fails_clearly_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    config = parse_config(
        {"line": "x"}, ["model.backbone.name=resnet18", "model.backbone.pretrained=true"]
    )
    with pytest.raises(ConfigError) as caught:
        build_backbone(config.model.backbone, 1, (64, 64))
    message = str(caught.value)
    assert message.startswith("model.backbone.pretrained: cannot download pretrained weights for")
    assert "local .safetensors path" in message
    assert "\n" not in message


# ----------------------------------------------------------------------------------- history


def history_config(**fields: object) -> HistoryConfig:
    base: dict[str, object] = {
        "signals": ["accel_brake", "steering", "speed", "purpose"],
        "signal_sizes": {"purpose": 2},
        "length": 6,
        "width": 16,
    }
    return HistoryConfig.model_validate({**base, **fields})


HEADS = [
    HeadConfig(output="steering"),
    HeadConfig(output="accel_brake", kind="classification", bins=[-1.0, 0.0, 1.0]),
]


@pytest.mark.parametrize("kind", ["dense", "lstm"])
def test_history_thought_vector(kind: str) -> None:
    branch = HistoryBranch(history_config(kind=kind, layers=3), HEADS)
    vector, aux = branch(torch.rand(4, 6, 5))
    assert vector.shape == (4, 16)
    assert aux == {}
    assert branch.out_features == 16


def test_history_lstm_is_charles_thought_vector() -> None:
    branch = HistoryBranch(history_config(kind="lstm", layers=5, width=128, length=60), HEADS)
    lstm = branch.encoder.lstm
    assert (lstm.num_layers, lstm.hidden_size, lstm.input_size) == (5, 128, 5)
    window = torch.rand(2, 60, 5)
    vector, _ = branch(window)
    _, (hidden, _) = lstm(window)
    assert torch.equal(vector, hidden[-1])


def test_history_prediction_and_aux_outputs() -> None:
    predicting = HistoryBranch(history_config(output="prediction", aux_weight=0.25), HEADS)
    vector, aux = predicting(torch.rand(3, 6, 5))
    assert vector.shape == (3, 1 + 3)  # one steering value, three accel_brake logits
    assert aux["aux/steering"].shape == (3,)
    assert aux["aux/accel_brake"].shape == (3, 3)
    assert torch.equal(aux["aux/steering"], vector[:, 0])

    thinking = HistoryBranch(history_config(kind="dense", aux_weight=0.25), HEADS)
    vector, aux = thinking(torch.rand(3, 6, 5))
    assert vector.shape == (3, 16)
    assert set(aux) == {"aux/steering", "aux/accel_brake"}
    with pytest.raises(ValueError, match=r"\[B, 6, 5\]"):
        thinking(torch.rand(3, 5, 5))


# ------------------------------------------------------------------------------------- heads


def test_quarter_head_widths_from_1024() -> None:
    head = build_head(HeadConfig(output="steering"), 1024, 0)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (1024, 256),
        (256, 64),
        (64, 16),
        (16, 1),
    ]
    assert count_parameters(head).total == CHARLES_HEAD
    assert head(torch.rand(5, 1024)).shape == (5,)
    with pytest.raises(ConfigError, match=r"model\.heads\.2\.widths"):
        build_head(HeadConfig(output="steering"), 32, 2)


def test_classification_head_and_bin_mapping() -> None:
    config = HeadConfig(
        output="steering",
        kind="classification",
        widths=[8],
        bins=[-0.9, 0.0, 0.9],
        low=-0.9,
        high=0.9,
    )
    head = build_head(config, 32, 0)
    logits = head(torch.rand(4, 32))
    assert logits.shape == (4, 3)
    chosen = logits_to_action(torch.tensor([[0.1, 2.0, 0.3], [5.0, 0.0, 0.0]]), head.bin_values)
    assert chosen.tolist() == pytest.approx([0.0, -0.9])
    generator = torch.Generator().manual_seed(0)
    sampled = logits_to_action(logits, head.bin_values, sample=True, generator=generator)
    assert sampled.shape == (4,)
    assert torch.isin(sampled, head.bin_values).all()
    assert config.bins is not None
    targets = torch.tensor([-0.9, -0.46, -0.45, 0.1, 0.45, 0.9])
    assert action_to_bin(targets, config.bins.boundaries()).tolist() == [0, 0, 1, 1, 2, 2]
    assert "bin_values" not in head.state_dict()


# ------------------------------------------------------------------------------------ policy


def test_policy_forward_with_stacked_frames_and_history() -> None:
    config = model_config(
        backbone={"name": "resnet18"},
        history={
            "signals": ["speed", "purpose"],
            "signal_sizes": {"purpose": 2},
            "length": 5,
            "width": 8,
            "aux_weight": 0.25,
        },
        neck=[64],
        heads=[
            {"output": "steering", "widths": [16]},
            {"output": "accel_brake", "kind": "classification", "bins": [-1, 0, 1]},
        ],
    )
    policy = build_policy(config, (6, 64, 64), {"speed": 1, "purpose": 2, "progress": 1})
    assert isinstance(policy, Policy)
    assert policy.history_shape == (5, 3)
    out = policy(torch.rand(2, 6, 64, 64), torch.rand(2, 5, 3))
    assert out["steering"].shape == (2,)
    assert out["accel_brake"].shape == (2, 3)
    assert out["aux/steering"].shape == (2,)
    assert out["aux/accel_brake"].shape == (2, 3)
    actions = policy.actions(out)
    assert set(actions) == {"steering", "accel_brake"}
    assert actions["accel_brake"].shape == (2,)

    names = {name.split(".")[0] for name, _ in policy.named_parameters()}
    assert names == {"backbone", "history", "neck", "heads"}
    assert any(name.startswith("heads.steering.") for name, _ in policy.named_parameters())

    with pytest.raises(ValueError, match="history"):
        policy(torch.rand(2, 6, 64, 64))
    with pytest.raises(ValueError, match="frames"):
        policy(torch.rand(2, 3, 64, 64), torch.rand(2, 5, 3))
    with pytest.raises(ConfigError, match=r"model\.history\.signal_sizes\.purpose"):
        build_policy(config, (6, 64, 64), {"speed": 1, "purpose": 1})
    with pytest.raises(ConfigError, match=r"model\.history\.signals: 'purpose'"):
        build_policy(config, (6, 64, 64), {"speed": 1})


def test_policy_without_history_or_neck() -> None:
    config = load_config(CONFIGS / "pilot" / "tiny_net.yaml")
    policy = build_policy(config.model, config.frame_shape)
    out = policy(torch.rand(3, *config.frame_shape))
    assert set(out) == {"steering"}
    assert out["steering"].shape == (3, 3)
    with pytest.raises(ValueError, match="no history branch"):
        policy(torch.rand(3, *config.frame_shape), torch.rand(3, 1, 1))


def test_carracing_default_is_small_and_runs() -> None:
    config = load_config(CONFIGS / "carracing" / "pilotnet.yaml")
    summary = summarize_config(config, {"speed": 1, "steering": 1, "accel_brake": 1})
    assert summary.total_params < 1_000_000
    assert summary.input_shapes == {"frames": (3, 64, 64), "history": (4, 1)}
    assert summary.output_shapes == {"steering": (), "accel_brake": ()}


# ----------------------------------------------------------------------------------- summary


class _SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # 112
        self.norm = nn.BatchNorm2d(4)  # 8 weights + 8 running statistics
        self.fc = nn.Linear(4, 2)  # 10


def test_keras_convention_counts() -> None:
    net = _SmallNet()
    counts = count_parameters(net)
    assert (counts.trainable, counts.frozen, counts.bn_statistics) == (130, 0, 8)
    assert (counts.total, counts.non_trainable) == (138, 8)  # num_batches_tracked not counted
    net.conv.requires_grad_(False)
    counts = count_parameters(net)
    assert (counts.trainable, counts.non_trainable, counts.total) == (18, 120, 138)


def test_summary_of_a_policy_with_batchnorm_and_frozen_backbone() -> None:
    config = model_config(backbone={"name": "resnet18"}, neck=[64])
    policy = build_policy(config, (3, 64, 64))
    batchnorm = sum(m.num_features for m in policy.modules() if isinstance(m, nn.BatchNorm2d))
    parameters = sum(p.numel() for p in policy.parameters())
    summary = summarize(policy)
    assert summary.non_trainable_params == 2 * batchnorm
    assert summary.total_params == parameters + 2 * batchnorm
    assert sum(row.params for row in summary.rows) == summary.total_params
    assert summary.output_shapes == {"steering": (), "accel_brake": ()}
    text = render_summary(summary, title="resnet18 policy")
    assert f"Total params: {summary.total_params:,}" in text
    assert "backbone.body.layer1" in text and "[B, 64, 16, 16]" in text

    policy.backbone.requires_grad_(False)
    frozen = summarize(policy, with_shapes=False)
    heads_and_neck = sum(
        count_parameters(part).total for part in (policy.neck, *policy.heads.values())
    )
    assert frozen.trainable_params == heads_and_neck
    assert frozen.total_params == summary.total_params
    assert all(row.output_shape == "" for row in frozen.rows)


def test_charles_model_0004_parameter_count() -> None:
    """timm's IRv2 + Charles's Dense 1024 and quarter heads vs the Keras page's 56,470,434."""
    config = load_config(CONFIGS / "charles" / "model_0004_inceptionresnetv2.yaml")
    assert config.frame_shape == (3, 270, 480)
    policy = build_policy(config.model, config.frame_shape)
    summary = summarize(policy, with_shapes=False)
    parts = {name: counts.total for name, counts in summary.parts.items()}
    assert parts["neck"] == DENSE_1536_1024
    assert parts["heads.accel_brake"] == parts["heads.steering"] == CHARLES_HEAD
    assert parts["neck"] + parts["heads.accel_brake"] + parts["heads.steering"] == NECK_AND_HEADS
    assert abs(summary.total_params - KERAS_TOTAL) / KERAS_TOTAL < 0.001
    assert summary.non_trainable_params == KERAS_NON_TRAINABLE
    # The whole difference is timm's BatchNorm scale (gamma), which Keras' IRv2 leaves out.
    gammas = sum(m.weight.numel() for m in policy.modules() if isinstance(m, nn.BatchNorm2d))
    assert summary.total_params - KERAS_TOTAL == gammas == 30_272

    policy.backbone.requires_grad_(False)  # model_0009_v5: frozen IRv2, trainable top
    assert summarize(policy, with_shapes=False).trainable_params == NECK_AND_HEADS
