"""Classification (seed 003, GTSRB) and discrete driving actions (seed 004) end to end.

Synthetic signs in the official GTSRB layout are imported into a real store, a real timm
MobileNetV2 is trained at 32x32 with the encoder frozen for one epoch and then fine-tuned, and
`drivelab eval RUN --offline test` is checked against predictions computed here directly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli_here
from drivelab.config import ConfigError, load_config, parse_config
from drivelab.data.classes import LabelError, group_classes, load_group_map
from drivelab.data.gtsrb import import_gtsrb
from drivelab.data.importers import ImportDataError, ImportOptions
from drivelab.data.loader import EpisodeFrameDataset
from drivelab.data.store import DatasetStore
from drivelab.data.synth_signs import synthesize_signs
from drivelab.evaluate.classification import classification_report
from drivelab.evaluate.offline import OfflineJob
from drivelab.evaluate.runtime import PolicyRuntime
from drivelab.models import build_policy
from drivelab.runs.checkpoints import list_checkpoints, load_weights, weights_path
from drivelab.runs.metrics import read_metrics
from drivelab.train import train
from drivelab.train.trainer import seed_everything

ROOT = Path(__file__).resolve().parents[1]
SIGNS_CONFIG = ROOT / "configs" / "gtsrb" / "mobilenetv2_5layer.yaml"
DRIVING_3BIN = ROOT / "configs" / "carracing" / "pilotnet_3bin_steering.yaml"
CLASSES = 5
BATCH = 8


def _one_error_line(result, *needles: str) -> str:
    """A user mistake: exit 2 and one `error:` line naming what is wrong."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def signs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 synthetic sign classes, 12 training + 4 test images each, imported at 32x32."""
    base = tmp_path_factory.mktemp("signs")
    synthesize_signs(base / "src", classes=CLASSES, per_class=12, test_per_class=4, seed=3, size=32)
    import_gtsrb(base / "src", base / "signs.zarr", ImportOptions(size=32, val_fraction=0.25))
    return base / "signs.zarr"


def _signs_overrides(dataset: Path) -> list[str]:
    return [
        f"data.path={dataset}", "data.input_size=[32, 32]", "data.workers=0",
        "model.backbone.name=mobilenetv2_035", "model.heads.0.widths=[32, 16]",
        "model.heads.0.dropout=0.1", f"train.batch_size={BATCH}", "train.epochs=2",
        "model.unfreeze_at_epoch=1", "model.unfreeze_lr=0.0005", "train.checkpoint_every=1",
        "train.val_every=2", "train.log_every=1",
    ]


@pytest.fixture(scope="module")
def signs_run(signs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs: encoder frozen for the first, fine-tuned (its own LR) in the second."""
    config = load_config(SIGNS_CONFIG, _signs_overrides(signs))
    return train(config, runs_root=tmp_path_factory.mktemp("runs")).run.path


def _split_predictions(run: Path, store: DatasetStore, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a whole split, computed with the runtime but not the offline code."""
    runtime = PolicyRuntime.from_ref(str(run))
    ds = EpisodeFrameDataset(store, split, runtime.policy.outputs, frames=runtime.k)
    batch = ds.__getitems__(list(range(len(ds))))
    with torch.inference_mode():
        logits = runtime.policy(*runtime.pipeline(batch))["class"]
    return logits, batch["target/class"].reshape(-1).long()


def test_config_resolves_classes_and_head(signs_run: Path) -> None:
    config = load_config(signs_run / "config.yaml")
    head = config.model.heads[0]
    assert config.task == "classification"
    assert head.kind == "class" and head.classes == CLASSES  # from the dataset's num_classes
    policy = build_policy(config.model, config.frame_shape)
    layers = [type(m).__name__ for m in policy.heads["class"]]
    assert layers == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    out = policy(torch.zeros(2, 3, 32, 32))["class"]
    assert out.shape == (2, CLASSES)


def test_freeze_keeps_encoder_then_fine_tunes(signs_run: Path, signs: Path) -> None:
    config = load_config(signs_run / "config.yaml")
    per_epoch = (len(EpisodeFrameDataset(DatasetStore.open(signs), "train", ["class"]))) // BATCH
    batches = list_checkpoints(signs_run / "checkpoints")
    assert batches == list(range(1, 2 * per_epoch + 1))
    seed_everything(config.seed)  # the trainer's initialisation, rebuilt
    initial = {k: v for k, v in build_policy(config.model, config.frame_shape).state_dict().items()
               if k.startswith("backbone.")}

    def weights(batch: int, prefix: str) -> dict[str, torch.Tensor]:
        loaded = load_weights(weights_path(signs_run / "checkpoints", batch))
        return {k: v for k, v in loaded.items() if k.startswith(prefix)}

    for batch in range(1, per_epoch + 1):  # frozen: parameters and BatchNorm statistics fixed
        frozen = weights(batch, "backbone.")
        assert frozen.keys() == initial.keys()
        assert all(torch.equal(frozen[k], initial[k]) for k in initial), batch
    head_first, head_last = weights(1, "heads."), weights(per_epoch, "heads.")
    assert any(not torch.equal(head_first[k], head_last[k]) for k in head_first)
    after = weights(per_epoch + 1, "backbone.")
    changed = [k for k in initial if not torch.equal(after[k], initial[k])]
    assert any(k.endswith("weight") for k in changed)  # fine-tuning moved the encoder
    assert any(k.endswith("running_mean") for k in changed)  # and its BatchNorm is in train mode


def test_curves_log_loss_and_accuracy(signs_run: Path) -> None:
    rows = read_metrics(signs_run / "metrics.jsonl")
    train_rows = [r for r in rows if "class_accuracy" in r]
    val_rows = [r for r in rows if "val/class_accuracy" in r]
    assert len(train_rows) >= 4 and len(val_rows) >= 3  # batch 0 baseline + every 2 batches
    assert all(0.0 <= r["class_accuracy"] <= 1.0 for r in train_rows)
    assert all("class_mean_absolute_error" not in r for r in rows)  # no MAE of class ids
    assert all("val/class_loss" in r for r in val_rows)


def test_offline_eval_matches_direct_predictions(signs_run: Path, signs: Path, tmp_path: Path) -> None:
    out = tmp_path / "test.json"
    result = run_cli_here("eval", str(signs_run), "--offline", "test", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "macro-F1" in result.stdout and "top-5 accuracy" in result.stdout
    report = json.loads(out.read_text())["classification"]["class"]
    logits, labels = _split_predictions(signs_run, DatasetStore.open(signs), "test")
    guess = logits.argmax(dim=1)
    n = labels.shape[0]
    assert report["samples"] == n == 4 * CLASSES
    assert report["accuracy"] == pytest.approx((guess == labels).float().mean().item())
    confusion = np.zeros((CLASSES, CLASSES), np.int64)
    np.add.at(confusion, (labels.numpy(), guess.numpy()), 1)
    assert np.array_equal(np.array(report["confusion"]), confusion)
    tp = np.diag(confusion).astype(float)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros(CLASSES), where=confusion.sum(0) > 0)
    recall = tp / confusion.sum(1)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(CLASSES),
                   where=precision + recall > 0)
    assert [r["f1"] for r in report["per_class"]] == pytest.approx(f1.tolist(), abs=1e-6)
    assert report["macro_f1"] == pytest.approx(f1.mean(), abs=1e-6)  # every class present
    rows = np.array(report["confusion_normalized"])
    assert np.allclose(rows.sum(1), 1.0)
    assert report["top_k"] == CLASSES  # k = 5 capped by the class count
    assert report["top_5_accuracy"] == pytest.approx(1.0)
    top2 = logits.topk(2, dim=1).indices
    top2_expected = (top2 == labels[:, None]).any(1).float().mean().item()
    top2_report = OfflineJob(str(signs_run), "test", top_k=2).run().classification["class"]
    assert top2_report.top_k == 2 and top2_report.top_k_accuracy == pytest.approx(top2_expected)
    assert report["imbalance"]["scored"]["counts"] == [4] * CLASSES
    assert sum(report["imbalance"]["train"]["counts"]) == len(
        EpisodeFrameDataset(DatasetStore.open(signs), "train", ["class"]))
    assert (tmp_path / "test_confusion_class.png").read_bytes()[:4] == b"\x89PNG"
    saved = sorted((signs_run / "eval").glob("offline_test_batch*/confusion_class.png"))
    assert saved and saved[0].read_bytes()[:4] == b"\x89PNG"


def test_final_validation_accuracy_equals_offline_val(signs_run: Path, signs: Path) -> None:
    rows = read_metrics(signs_run / "metrics.jsonl")
    last = [r for r in rows if "val/class_accuracy" in r][-1]
    logits, labels = _split_predictions(signs_run, DatasetStore.open(signs), "val")
    assert last["val/class_accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_group_map_merges_classes(signs_run: Path, signs: Path, tmp_path: Path) -> None:
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"low speed limits": [0, "speed limit 30"], "fast": [3, 4]}))
    out = tmp_path / "grouped.json"
    result = run_cli_here("eval", str(signs_run), "--offline", "test", "--group-map", str(groups), "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())["classification"]["class"]
    assert report["classes"] == 3 and report["class_names"] == ["low speed limits", "speed limit 50", "fast"]
    assert report["groups"] == {"low speed limits": [0, 1], "speed limit 50": [2], "fast": [3, 4]}
    assert [r["support"] for r in report["per_class"]] == [8, 4, 8]
    logits, labels = _split_predictions(signs_run, DatasetStore.open(signs), "test")
    index = torch.tensor([0, 0, 1, 2, 2])
    merged = torch.zeros(len(labels), 3).index_add_(1, index, logits.softmax(1))
    assert report["accuracy"] == pytest.approx((merged.argmax(1) == index[labels]).float().mean().item())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": [0, 1], "b": [1, 2]}))
    with pytest.raises(LabelError, match=r"bad\.json: class 1 .* in both 'a' and 'b'"):
        OfflineJob(str(signs_run), "test", group_map=bad)
    names = [f"c{i}" for i in range(CLASSES)]
    bad.write_text(json.dumps({"a": [0, 9]}))
    with pytest.raises(LabelError, match="class 9 is outside the 5 classes"):
        load_group_map(bad, names)
    bad.write_text("{not json")
    with pytest.raises(LabelError, match="not JSON"):
        load_group_map(bad, names)


def test_classification_run_refuses_to_drive(signs_run: Path) -> None:
    _one_error_line(run_cli_here("eval", str(signs_run), "--episodes", "1"), "classification run", "--offline test")


def test_labels_outside_the_class_count_are_refused(signs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.zarr"
    shutil.copytree(signs, bad)
    DatasetStore.open(bad).update_attrs(num_classes=3)  # labels 3 and 4 now lie outside
    args = ["train", str(SIGNS_CONFIG), *_signs_overrides(bad), "--runs", str(tmp_path / "runs")]
    _one_error_line(run_cli_here(*args), "label 3", "outside the 3 classes")
    assert not (tmp_path / "runs").exists()
    config = load_config(SIGNS_CONFIG, [*_signs_overrides(signs), "model.heads.0.classes=7"])
    with pytest.raises(LabelError, match=r"model\.heads\.0\.classes: 7 classes, but .* has 5"):
        train(config, runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(LabelError, match="outside the 5 classes"):
        group_classes({"x": [5]}, [f"c{i}" for i in range(5)])


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"task": "classification"}, "kind: class"),
        ({"model": {"heads": [{"output": "class", "kind": "class"}]}}, "set task: classification"),
        ({"model": {"heads": [{"output": "steering", "classes": 4}]}}, "only to kind: class"),
        ({"model": {"heads": [{"output": "steering", "dropout": 1.0}]}}, "dropout"),
        ({"model": {"heads": [{"output": "steering", "activation": "swish"}]}}, "activation"),
        ({"model": {"heads": [{"output": "steering", "kind": "classification", "bins": "nope"}]}},
         "unknown bins preset 'nope'"),
        ({"task": "classification", "model": {"heads": [{"output": "class", "kind": "class", "loss": "mse"}]}},
         "uses 'ce'"),
    ],
)
def test_config_mistakes(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"line": "x", **patch})


def test_bin_presets_and_activation() -> None:
    config = parse_config({"line": "x", "model": {"neck": [], "heads": [
        {"output": "steering", "kind": "classification", "bins": "kkelchte", "low": -0.9, "high": 0.9,
         "widths": [8], "activation": "tanh"}]}})
    head = config.model.heads[0]
    assert head.bin_values() == [-0.9, 0.0, 0.9] and head.bin_boundaries() == [-0.45, 0.45]
    policy = build_policy(config.model, (3, 64, 64))
    assert [type(m).__name__ for m in policy.heads["steering"]] == ["Linear", "Tanh", "Linear"]


def test_bad_csv_bytes_and_empty_class_csv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    synthesize_signs(src, classes=3, per_class=4, seed=1, size=24)
    csv = src / "Final_Training" / "Images" / "00001" / "GT-00001.csv"
    original = csv.read_bytes()
    csv.write_bytes(b"\xff\xfe\x00garbage\x80")
    _one_error_line(run_cli_here("data", "import", "gtsrb", str(src), "--out", str(tmp_path / "a.zarr")),
                    "GT-00001.csv", "not a text CSV")
    csv.write_bytes(original.splitlines(keepends=True)[0])  # the header only
    with pytest.raises(ImportDataError, match=r"GT-00001\.csv lists no images .*4 image file"):
        import_gtsrb(src, tmp_path / "a.zarr")
    assert not (tmp_path / "a.zarr").exists()


def test_classification_report_direct() -> None:
    """torchmetrics' numbers on a hand-made case: 3 classes, one mistake, one absent class."""
    logits = torch.tensor([[3.0, 1, 0], [3, 1, 0], [0, 3, 1], [2, 3, 1]])
    labels = torch.tensor([0, 0, 1, 0])
    report = classification_report("class", logits.softmax(1), labels, ["a", "b", "c"], top_k=2,
                                   train_counts=[10, 1, 0])
    assert report.accuracy == pytest.approx(0.75)
    assert report.confusion == [[2, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert [r["f1"] for r in report.per_class] == pytest.approx([0.8, 2 / 3, 0.0])
    assert report.macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)  # c: neither true nor predicted
    assert report.top_k_accuracy == pytest.approx(1.0)
    assert report.imbalance["train"]["empty_classes"] == ["c"]
    assert report.imbalance["train"]["imbalance_ratio"] is None


# ----------------------------------------------------------------------------- discrete driving
@pytest.fixture(scope="module")
def three_bin_run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = load_config(DRIVING_3BIN, [
        f"data.path={small_dataset}", "train.max_batches=4", "train.batch_size=8",
        "train.checkpoint_every=2", "data.workers=0", "train.warmup_batches=0",
    ])
    return train(config, runs_root=tmp_path_factory.mktemp("runs")).run.path


def test_three_bin_steering_drives_by_argmax_and_sampling(three_bin_run: Path, tmp_path: Path) -> None:
    from drivelab.sim import make_env

    bins = {-0.4, 0.0, 0.4}
    env = make_env("carracing")
    try:
        for sample in (False, True):
            seen: list[list[float]] = []
            for _ in range(2):  # the same track twice: sampling is seeded per episode
                runtime = PolicyRuntime.from_ref(str(three_bin_run), sample=sample)
                runtime.check_env(env)
                runtime.reset(seed=5)
                obs = env.reset(seed=10_000)
                steering = []
                for _ in range(12):
                    action = runtime.act(obs)
                    steering.append(round(action["steering"], 6))
                    obs = env.step(np.array([action["steering"], action["accel_brake"]], np.float32)).observation
                seen.append(steering)
            assert set(seen[0]) <= {round(b, 6) for b in bins}
            assert seen[0] == seen[1]
    finally:
        env.close()
    out = tmp_path / "eval.json"  # the closed-loop evaluator, sampling the steering bins
    result = run_cli_here("eval", str(three_bin_run), "--episodes", "1", "--max-steps", "30",
                     "--workers", "1", "--sample", "--json", str(out))
    assert result.returncode == 0, result.stderr
    driver = json.loads(out.read_text())["drivers"][0]
    assert len(driver["episodes"]) == 1 and driver["episodes"][0]["failed"] is None


def test_charles_delta_bins_learn_changes_and_drive_relative_to_the_last_action(
    small_dataset: Path, tmp_path: Path
) -> None:
    """model_0001 v4/v5: bins are changes of the last executed steering, applied when driving."""
    from drivelab.sim import make_env

    overrides = [f"data.path={small_dataset}", "train.max_batches=3", "train.batch_size=8",
                 "train.checkpoint_every=3", "data.workers=0", "train.warmup_batches=0",
                 "model.heads.steering.bins=charles", "model.heads.steering.delta=true"]
    config = load_config(DRIVING_3BIN, overrides)
    store = DatasetStore.open(small_dataset)
    data = EpisodeFrameDataset(store, "train", ["steering", "accel_brake"], delta_outputs=["steering"])
    episode = store.episode(data.episodes[0].index)
    expected = np.asarray(episode["actions/steering"][:20]) - np.asarray(episode["telemetry/steering"][:20])
    batch = data.__getitems__(list(range(20)))
    assert np.allclose(batch["target/steering"].numpy(), expected)
    assert np.array_equal(batch["target/accel_brake"].numpy(), np.asarray(episode["actions/accel_brake"][:20]))

    run = train(config, runs_root=tmp_path).run.path
    runtime = PolicyRuntime.from_ref(str(run))
    charles = (-0.3, -0.1, -0.03, 0.0, 0.03, 0.1, 0.3)
    env = make_env("carracing")
    try:
        runtime.check_env(env)
        runtime.reset(seed=0)
        obs = env.reset(seed=10_000)
        for _ in range(10):
            last = float(obs.telemetry["steering"][0])
            action = runtime.act(obs)
            change = action["steering"] - last
            clipped = action["steering"] in (-0.4, 0.4)  # DRIVING_3BIN's steering range
            assert clipped or min(abs(change - b) for b in charles) < 1e-5
            obs = env.step(np.array([action["steering"], action["accel_brake"]], np.float32)).observation
    finally:
        env.close()
    with pytest.raises(ConfigError, match="delta bins need kind: classification"):
        load_config(DRIVING_3BIN, [*overrides, "model.heads.steering.kind=regression",
                                   "model.heads.steering.bins=null"])
