"""The backbone zoo (torchvision models through the registry) and `drivelab specs`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import run_cli_here
from drivelab.backbone_registry import SEED_ZOO, is_known_backbone
from drivelab.config import BackboneConfig, ConfigError, parse_config
from drivelab.errors import DrivelabError
from drivelab.models import build_backbone, build_policy
from drivelab.models.specs import SpecsPlan, measure_backbone, resolve_networks

SQUEEZE = "torchvision:squeezenet1_1"  # the smallest torchvision model (1.2M parameters)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def test_every_zoo_name_is_in_the_registry() -> None:
    assert all(is_known_backbone(name) for name in SEED_ZOO.values())
    assert resolve_networks([]) == list(SEED_ZOO.items())
    assert resolve_networks(["alex", "resnet18"]) == [("alex", "torchvision:alexnet"), ("resnet18", "resnet18")]


def test_specs_verb_measures_writes_and_refuses_to_clobber(tmp_path: Path) -> None:
    files = {flag: tmp_path / f"specs.{flag}" for flag in ("md", "csv", "json")}
    args = ["specs", "tiny", SQUEEZE, "--input-size", "64", "64", "--frames", "2", "--batch", "2",
            "--repeats", "1", *[a for flag, path in files.items() for a in (f"--{flag}", str(path))]]
    threads = torch.get_num_threads()
    result = run_cli_here(*args)
    assert result.returncode == 0, result.stderr
    assert torch.get_num_threads() == threads  # the 1-thread rows put the setting back

    rows = json.loads(files["json"].read_text())["rows"]
    assert [row["model"] for row in rows] == ["tiny", SQUEEZE]
    for row in rows:
        backbone = build_backbone(BackboneConfig(name=row["model"]), 2, (64, 64))
        assert row["params"] == sum(p.numel() for p in backbone.parameters())
        assert row["trainable"] == row["params"]
        assert row["flops"] > 0 and row["activation_bytes"] > 0
        assert row["weight_bytes"] >= 4 * row["params"]
        assert all(row["rates"][k] > 0 for k in ("cpu1_b1", "cpu1_bB", "cpu_all_b1", "cpu_all_bB"))
    tiny = rows[0]
    assert (tiny["feature_layers"], tiny["decision_layers"]) == (2, 1)
    # tiny at 64x64, 2 frames: conv 6->10 (6x6), conv 10->20 (3x3), FC 20*9*9 -> 1024
    assert tiny["params"] == (6 * 10 * 36 + 10) + (10 * 20 * 9 + 20) + (20 * 9 * 9 * 1024 + 1024)

    table = list(csv.DictReader(files["csv"].open()))
    assert [r["network"] for r in table] == ["tiny", SQUEEZE] and table[0]["batch"] == "2"
    markdown = files["md"].read_text()
    assert "| tiny | tiny | 2 | 1 |" in markdown and "Input 64x64, 2 frame(s)" in markdown

    before = files["md"].read_bytes()
    again = run_cli_here(*args)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert files["md"].read_bytes() == before


def test_unknown_backbone_is_one_line_with_close_names() -> None:
    result = run_cli_here("specs", "alexnt")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown backbone 'alexnt'" in lines[0]
    assert "'alex'" in lines[0] and "'torchvision:alexnet'" in lines[0]
    with pytest.raises(DrivelabError, match="nothing to measure"):
        resolve_networks(["none"])


def test_frames_the_network_cannot_take_are_one_error() -> None:
    with pytest.raises(DrivelabError, match=r"cannot take \[16, 16\] frames.*--input-size"):
        measure_backbone("squeeze", SQUEEZE, SpecsPlan(input_size=(16, 16), batch=1, repeats=1), gpu=False)


def test_torchvision_backbone_trains_as_a_policy_backbone() -> None:
    heads = [{"output": "steering", "widths": []}]  # no narrow ReLU layers to start dead
    model = parse_config({"line": "t", "model": {"backbone": {"name": SQUEEZE}, "neck": [64],
                                                 "heads": heads}}).model
    policy = build_policy(model, (6, 64, 64))
    assert policy.backbone.num_features == 512
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    before = policy.backbone.body.features[0].weight.detach().clone()
    out = policy(torch.rand(2, 6, 64, 64))
    loss = sum(value.float().pow(2).mean() for value in out.values())
    loss.backward()
    optimizer.step()
    assert not torch.equal(policy.backbone.body.features[0].weight, before)


def test_torchvision_pretrained_from_a_local_safetensors_file(tmp_path: Path) -> None:
    import torchvision

    reference = torchvision.models.get_model("squeezenet1_1").eval()  # with its classifier
    path = tmp_path / "squeezenet1_1.safetensors"
    save_file(reference.state_dict(), str(path))
    single = build_backbone(BackboneConfig(name=SQUEEZE, pretrained=path), 1, (64, 64)).eval()
    frames = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        pooled = torch.relu(reference.features(frames)).mean(dim=(2, 3))  # the classifier, minus its conv
        assert torch.allclose(single(frames), pooled, atol=1e-5)
    stacked = build_backbone(BackboneConfig(name=SQUEEZE, pretrained=path), 2, (64, 64))
    expected = reference.features[0].weight.repeat(1, 2, 1, 1) / 2
    assert torch.allclose(stacked.body.features[0].weight, expected)


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ({"name": "alexnet"}, "did you mean 'torchvision:alexnet'"),
        ({"name": SQUEEZE, "pretrained": True}, "torchvision weights are not downloaded here"),
        ({"name": SQUEEZE, "pool": "max"}, "keeps the model's own pooling"),
    ],
)
def test_torchvision_config_refusals(backbone: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"line": "t", "model": {"backbone": backbone}})
