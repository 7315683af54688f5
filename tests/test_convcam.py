"""The convcam: the backbone's last feature maps tiled beside the frame in the driving video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import run_cli_here
from drivelab.config import BackboneConfig, load_config
from drivelab.evaluate.convcam import ConvCam, ConvcamError, find_feature_map, tile_feature_maps
from drivelab.evaluate.runner import drive_and_measure
from drivelab.evaluate.runtime import PolicyDriver, PolicyRuntime
from drivelab.evaluate.video import OverlayVideo
from drivelab.media import read_mp4
from drivelab.models.backbones import build_backbone
from drivelab.sim import make_env
from drivelab.train import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "carracing" / "pilotnet.yaml"


@pytest.fixture(scope="module")
def pilotnet_run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 4-batch run of the default CarRacing PilotNet config."""
    runs = tmp_path_factory.mktemp("runs")
    config = load_config(CONFIG, [f"data.path={small_dataset}", "train.max_batches=4",
                                  "train.batch_size=8", "train.checkpoint_every=2",
                                  "data.workers=0"])
    return train(config, runs_root=runs).run.path


@pytest.mark.parametrize(
    ("name", "pool", "module", "shape"),
    [
        ("pilotnet", "flatten", "act5", (64, 5, 5)),  # after conv5's ReLU, before the flatten
        ("tiny", "flatten", "act2", (20, 15, 15)),
        ("resnet18", "avg", "body.layer4", (512, 3, 3)),  # timm: the last stage, before the pool
    ],
)
def test_finds_the_last_feature_map(name: str, pool: str, module: str, shape: tuple) -> None:
    backbone = build_backbone(BackboneConfig(name=name, pool=pool), 1, (96, 96))
    assert find_feature_map(backbone, (3, 96, 96)) == (module, shape)


def test_a_backbone_without_a_map_is_one_error() -> None:
    tokens = nn.Sequential(nn.Flatten(1), nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(ConvcamError, match="no \\[C, h, w\\] feature map"):
        ConvCam(tokens, (3, 8, 8))


def test_tiles_are_normalised_per_channel_and_fill_the_frame_height() -> None:
    maps = np.stack([np.arange(16, dtype=np.float32).reshape(4, 4) * scale for scale in (1, 1000)]
                    + [np.full((4, 4), 7.0, np.float32)])
    assert tile_feature_maps(maps, height=96).shape == (96, 96, 3)  # upscaled to the frame
    image = tile_feature_maps(maps, height=9)  # native size: a 2x2 grid of 4x4 tiles, 1-px gaps
    assert image.dtype == np.uint8 and image.shape == (9, 9, 3)
    top_left, top_right, bottom_left = image[:4, :4], image[:4, 5:], image[5:, :4]
    assert np.array_equal(top_left, top_right)  # the 1000x channel looks the same: own min-max
    assert len(np.unique(top_left.reshape(-1, 3), axis=0)) == 16
    assert len(np.unique(bottom_left.reshape(-1, 3), axis=0)) == 1  # a constant (dead) channel
    assert tuple(bottom_left[0, 0]) == (0, 0, 4)  # ... is drawn as the colour map's black
    assert tuple(image[4, 0]) == tuple(image[5:, 5:].reshape(-1, 3)[0]) == (24, 24, 24)  # gaps


def test_convcam_video_is_wider_and_shows_what_the_policy_computes(
    pilotnet_run: Path, tmp_path: Path
) -> None:
    env = make_env("carracing", max_steps=12)
    widths = {}
    try:
        for convcam in (False, True):
            driver = PolicyDriver(PolicyRuntime.from_ref(str(pilotnet_run)), env, convcam=convcam)
            video = OverlayVideo(env.fps)
            drive_and_measure(env, driver, seed=5, max_steps=12, video=video)
            with Image.open(video.save(tmp_path / f"convcam_{convcam}.gif")) as gif:
                widths[convcam] = gif.size[0]
                assert gif.n_frames == 6
            side = driver.side_image(env.reset(seed=5).frame)  # the heat map over a real frame
            if not convcam:
                assert side is None
                continue
            assert side is not None and side.dtype == np.uint8
            assert side.shape[0] == env.frame_shape[0]  # the frame's height, as the brief says
            assert len(np.unique(side.reshape(-1, 3), axis=0)) > 8  # not a constant image
            # the hook sees the same map the policy's own backbone computes for this frame
            # at the default 64x64 input conv5's map is 1x1, so the last map with extent is act4
            assert driver.convcam is not None and driver.convcam.module_name == "act4"
            latest = driver.convcam._latest
            assert latest is not None and latest.shape == (64, 3, 3) and float(latest.std()) > 0
    finally:
        env.close()
    assert widths[False] == 96 * 3
    assert widths[True] == widths[False] + 96 * 3  # the heat map: the frame's size, beside it


def test_cli_convcam_writes_wider_gifs(pilotnet_run: Path, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    r = run_cli_here("eval", str(pilotnet_run), "--episodes", "1", "--workers", "1", "--max-steps", "8",
                "--seed", "600", "--video", str(videos), "--convcam")
    assert r.returncode == 0, r.stderr
    (video,) = videos.glob("*.mp4")
    frames, _ = read_mp4(video)
    assert frames[0].shape[1] == 2 * 96 * 3  # the frame and its heat map, side by side
    bad = run_cli_here("eval", str(pilotnet_run), "--convcam")
    assert bad.returncode == 2 and "add --video DIR" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_convcam_hook_comes_off() -> None:
    backbone = build_backbone(BackboneConfig(name="tiny", pool="flatten"), 1, (30, 30))
    cam = ConvCam(backbone, (3, 30, 30))
    assert cam.image(30) is None  # before the first step there is nothing to show
    with torch.inference_mode():
        backbone(torch.rand(1, 3, 30, 30))
    assert cam.image(30) is not None
    cam.reset()
    cam.close()
    with torch.inference_mode():
        backbone(torch.rand(1, 3, 30, 30))
    assert cam.image(30) is None
