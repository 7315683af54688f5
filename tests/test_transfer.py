"""Transfer learning and freezing on real runs: init_from accounting, renames, strictness, bad
sources, frozen weights through real training (BatchNorm included), unfreeze_at, exact resume
across the unfreeze, and the summary's counts.

Sources are real runs trained for a few batches on the session's small CarRacing dataset
(PilotNet at 64x64, or timm's tiny ``test_efficientnet`` where BatchNorm matters).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from conftest import PILOTNET, quick, run_cli_here
from drivelab.cli import app
from drivelab.config import ConfigError, ExperimentConfig, load_config
from drivelab.errors import DrivelabError
from drivelab.models import build_policy
from drivelab.models.freezing import FreezePlan, plan_freeze
from drivelab.models.name_globs import TransferError
from drivelab.models.summary import summarize_config
from drivelab.models.transfer import initialise_from
from drivelab.runs.checkpoints import list_checkpoints, load_weights
from drivelab.runs.folder import RunFolder
from drivelab.train import train
from drivelab.train.trainer import seed_everything

CONFIG = PILOTNET
SOURCE_LINE = "src"


def tiny(dataset: Path, *extra: str) -> list[str]:
    """PilotNet + a 1-layer LSTM over speed at 64x64, no validation: seconds per run."""
    return quick(
        dataset,
        "data.val_split=null",
        "train.log_every=1",
        "train.warmup_batches=0",
        "train.val_every=null",
        "model.history.kind=lstm",
        "model.history.width=16",
        "model.neck=[32]",
        "train.max_batches=4",
        "train.checkpoint_every=2",
        *extra,
        batch_size=8,
    )


def config_for(dataset: Path, *extra: str) -> ExperimentConfig:
    return load_config(CONFIG, tiny(dataset, *extra))


def weights_at(run: RunFolder, batch: int) -> dict[str, torch.Tensor]:
    return load_weights(run.checkpoints / f"batch_{batch}.safetensors")


@pytest.fixture(scope="module")
def source(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """A real 4-batch run with checkpoints at batches 2 and 4."""
    root = tmp_path_factory.mktemp("runs")
    result = train(config_for(small_dataset, f"line={SOURCE_LINE}"), runs_root=root)
    assert list_checkpoints(result.run.checkpoints) == [2, 4]
    return result.run


def fresh_policy(cfg: ExperimentConfig) -> torch.nn.Module:
    return build_policy(cfg.model, cfg.frame_shape)


# ---------------------------------------------------------------------------- init_from
def test_init_from_a_run_at_a_batch_copies_only_the_selected_modules(
    small_dataset: Path, source: RunFolder
) -> None:
    cfg = config_for(
        small_dataset, "model.neck=[24]",
        f"model.init_from=[{{source: {source.name}@2, modules: [backbone, history.encoder.*]}}]",
    )
    policy = fresh_policy(cfg)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    report = initialise_from(cfg.model, policy, source.path.parents[1])
    assert report is not None
    at2, at4 = weights_at(source, 2), weights_at(source, 4)
    assert not torch.equal(at2["backbone.conv1.weight"], at4["backbone.conv1.weight"])
    after = policy.state_dict()
    selected = [k for k in after if k.startswith(("backbone.", "history.encoder."))]
    assert selected and len(selected) < len(after)
    for key, value in after.items():
        expected = at2[key] if key in selected else before[key]
        assert torch.equal(value, expected), key
    (entry,) = report.sources
    assert entry.resolved.endswith(f"{source.name}@2")
    assert sorted(entry.copied) == sorted(selected)
    assert entry.copied_values == sum(after[k].numel() for k in selected)
    assert sorted(entry.skipped) == sorted(k for k in at2 if k not in selected)
    assert not (entry.missing or entry.mismatched or entry.unexpected)
    assert sorted(report.fresh) == sorted(k for k in after if k not in selected)
    assert report.copied_tensors + len(report.fresh) == report.total_tensors == len(after)
    assert report.copied_values + report.fresh_values == report.total_values

    # no @batch: the run's latest checkpoint; a path relative to the runs root works too
    latest = config_for(
        small_dataset,
        f"model.init_from=[{{source: {SOURCE_LINE}/{source.name}, modules: [backbone.*]}}]",
    )
    policy = fresh_policy(latest)
    report = initialise_from(latest.model, policy, source.path.parents[1])
    assert report is not None and report.sources[0].resolved.endswith("@4")
    assert torch.equal(policy.state_dict()["backbone.conv5.weight"], at4["backbone.conv5.weight"])


def test_rename_maps_prefixes_of_a_weights_file(
    small_dataset: Path, source: RunFolder, tmp_path: Path
) -> None:
    at4 = weights_at(source, 4)
    bare = {k.removeprefix("backbone."): v for k, v in at4.items() if k.startswith("backbone.")}
    path = tmp_path / "pilotnet.safetensors"
    save_file(bare, str(path))
    entry = f"{{source: {path}, modules: [backbone.*], rename: {{'': backbone.}}}}"
    cfg = config_for(small_dataset, f"model.init_from=[{entry}]")
    policy = fresh_policy(cfg)
    report = initialise_from(cfg.model, policy)
    assert report is not None and report.copied_tensors == len(bare)
    assert torch.equal(policy.state_dict()["backbone.conv3.bias"], at4["backbone.conv3.bias"])
    unrenamed = config_for(small_dataset, f"model.init_from=[{{source: {path}, modules: [backbone.*]}}]")
    with pytest.raises(TransferError, match=r"matches nothing in .*pilotnet\.safetensors.*rename"):
        initialise_from(unrenamed.model, fresh_policy(unrenamed))


def test_strict_mismatch_lists_the_keys_and_strict_false_reports_them(
    small_dataset: Path, source: RunFolder
) -> None:
    entry = f"source: {source.name}@2, modules: [backbone.*, history.*]"
    cfg = config_for(small_dataset, "model.history.width=8", f"model.init_from=[{{{entry}}}]")
    root = source.path.parents[1]
    with pytest.raises(TransferError) as refused:
        initialise_from(cfg.model, fresh_policy(cfg), root)
    message = str(refused.value)
    assert "model.init_from.0" in message and "strict: false" in message
    assert "history.encoder.lstm.weight_ih_l0 source [64, 1] vs policy [32, 1]" in message

    loose = config_for(small_dataset, "model.history.width=8",
                       f"model.init_from=[{{{entry}, strict: false}}]")
    policy = fresh_policy(loose)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    report = initialise_from(loose.model, policy, root)
    assert report is not None
    (part,) = report.sources
    lstm = [k for k in before if k.startswith("history.encoder.lstm.")]
    assert sorted(m.split(" ")[0] for m in part.mismatched) == sorted(lstm)
    after = policy.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in lstm)  # kept their fresh init
    assert all(k in report.fresh for k in lstm)
    assert torch.equal(after["backbone.conv1.weight"], weights_at(source, 2)["backbone.conv1.weight"])


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("[{source: RUN@3}]", r"no checkpoint at batch 3; nearest: 2, 4"),
        ("[{source: nope_v1@2}]", r"model\.init_from\.0: nope_v1 is not a run folder"),
        ("[{source: RUN@2, modules: [decoder.*]}]", r"'decoder\.\*' matches nothing in the policy"),
        ("[{source: missing.safetensors}]", r"weights file not found"),
        ("[{source: 'timm:not_a_model_at_all'}]", r"timm publishes no pretrained weights"),
        ("[{source: RUN@2, modules: [backbone.*]}, {source: RUN@4, modules: [backbone.conv1]}]",
         r"model\.init_from\.1: .*already come from model\.init_from\.0"),
    ],
)
def test_bad_sources_are_one_clear_error(
    small_dataset: Path, source: RunFolder, entries: str, message: str
) -> None:
    cfg = config_for(small_dataset, f"model.init_from={entries.replace('RUN', source.name)}")
    policy = fresh_policy(cfg)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    with pytest.raises(TransferError, match=message):
        initialise_from(cfg.model, policy, source.path.parents[1])
    assert all(torch.equal(v, before[k]) for k, v in policy.state_dict().items())  # untouched


def test_glob_matching_nothing_in_the_source_is_an_error(small_dataset: Path, source: RunFolder) -> None:
    cfg = config_for(small_dataset, "model.history.aux_weight=0.25",
                     f"model.init_from=[{{source: {source.name}, modules: [history.aux.*]}}]")
    with pytest.raises(TransferError, match=r"'history\.aux\.\*' matches nothing in .*src_v1@4"):
        initialise_from(cfg.model, fresh_policy(cfg), source.path.parents[1])


def test_cli_prints_the_init_report_and_keeps_it_in_the_run(
    small_dataset: Path, source: RunFolder, tmp_path: Path
) -> None:
    root = source.path.parents[1]
    args = ["train", str(CONFIG), *tiny(small_dataset, "line=combined", "train.max_batches=1",
                                        "train.checkpoint_every=1"),
            "--runs", str(root), "--no-progress"]
    entry = f"model.init_from=[{{source: {source.name}@2, modules: [backbone.*]}}]"
    result = CliRunner().invoke(app, [*args, entry])
    assert result.exit_code == 0, result.output
    assert f"init from {source.path}@2 [backbone.*]: copied 10 tensors" in result.output
    assert "newly initialised" in result.output
    run = RunFolder(root / "combined" / "combined_v1")
    saved = json.loads((run.path / "init_report.json").read_text())
    assert saved["counts"]["copied_tensors"] == 10
    assert saved["counts"]["copied_tensors"] + saved["counts"]["fresh_tensors"] == saved["counts"]["tensors"]
    assert run.read_status()["init_from"] == saved["counts"]

    bad = run_cli_here(*args, f"model.init_from=[{{source: {source.name}@3}}]")
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.init_from.0:"), bad.stderr
    assert "nearest: 2, 4" in lines[0]
    assert sorted(p.name for p in (root / "combined").iterdir()) == ["combined_v1"]  # no new run


# ---------------------------------------------------------------------------- freezing
def bn_config(dataset: Path, *extra: str) -> ExperimentConfig:
    """timm's tiny test_efficientnet (13 BatchNorm layers) at 32x32, AdamW with weight decay."""
    return config_for(
        dataset, "data.input_size=[32,32]", "train.batch_size=4",
        "model.backbone.name=test_efficientnet", "model.backbone.pool=avg",
        "train.optimizer=adamw", "train.weight_decay=0.1",
        "model.freeze=[backbone.*]", "train.schedule=constant", *extra,
    )


FROZEN_RUN = ("line=frozen", "train.max_batches=5", "train.checkpoint_every=1",
              "model.unfreeze_at=3", "model.unfreeze_lr=0.0005")


@pytest.fixture(scope="module")
def frozen_run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """5 batches with the backbone frozen until batch 3, a checkpoint after every batch."""
    return train(bn_config(small_dataset, *FROZEN_RUN), runs_root=tmp_path_factory.mktemp("frozen")).run


def test_frozen_parameters_and_batchnorm_stay_bit_identical_until_unfreeze_at(
    small_dataset: Path, frozen_run: RunFolder
) -> None:
    cfg = bn_config(small_dataset, *FROZEN_RUN)
    seed_everything(cfg.seed)
    initial = fresh_policy(cfg).state_dict()  # the trainer's init for this seed
    ckpt = {b: weights_at(frozen_run, b) for b in range(1, 6)}
    backbone = [k for k in initial if k.startswith("backbone.")]
    stats = [k for k in backbone if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 26
    for batch in (1, 2, 3):  # steps 1-3 run frozen: weights, BN statistics, even decay untouched
        assert all(torch.equal(ckpt[batch][k], initial[k]) for k in backbone), batch
    for batch in (4, 5):  # unfrozen from step 4: every backbone weight moves, BN in train mode
        previous = ckpt[batch - 1]
        changed = [k for k in backbone if not torch.equal(ckpt[batch][k], previous[k])]
        assert all(k in changed for k in stats), batch
        assert len(changed) > len(backbone) * 0.9, (batch, len(changed), len(backbone))
    for batch in range(1, 6):  # the rest trains from the first step
        before = ckpt[batch - 1] if batch > 1 else initial
        assert not torch.equal(ckpt[batch]["neck.0.weight"], before["neck.0.weight"]), batch
    state = torch.load(frozen_run.checkpoints / "batch_5.state.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 0.5]
    assert groups[1]["lr"] == pytest.approx(0.0005) and groups[0]["lr"] == pytest.approx(0.001)


def test_resume_across_the_unfreeze_is_bit_identical(small_dataset: Path, frozen_run: RunFolder,
                                                     tmp_path: Path) -> None:
    copy = RunFolder(tmp_path / "frozen" / frozen_run.name)
    shutil.copytree(frozen_run.path, copy.path)
    for batch in range(3, 6):  # as if the trainer had stopped after batch 2 (before the unfreeze)
        (copy.checkpoints / f"batch_{batch}.safetensors").unlink()
        (copy.checkpoints / f"batch_{batch}.state.pt").unlink()
    resumed = train(bn_config(small_dataset, *FROZEN_RUN), runs_root=tmp_path, resume=copy.path)
    assert resumed.first_batch == 2 and resumed.batches == 5
    for batch in range(3, 6):
        a, b = weights_at(frozen_run, batch), weights_at(copy, batch)
        assert all(torch.equal(a[k], b[k]) for k in a), batch


def test_freeze_errors_leave_no_run(small_dataset: Path, tmp_path: Path) -> None:
    cases = [
        (["model.freeze=['*']"], r"freezes every parameter"),
        (["model.freeze=[decoder]"], r"'decoder' matches no parameter of the policy; it has backbone"),
        (["model.freeze=[backbone.*]", "model.unfreeze_at=4"], r"not before the last batch \(4\)"),
    ]
    for extra, message in cases:
        with pytest.raises(TransferError, match=message):
            train(config_for(small_dataset, *extra), runs_root=tmp_path)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match=r"model\.unfreeze_at: needs model\.freeze"):
        config_for(small_dataset, "model.unfreeze_at=2")
    with pytest.raises(ConfigError, match=r"model\.unfreeze_lr: needs unfreeze_at"):
        config_for(small_dataset, "model.freeze=[backbone]", "model.unfreeze_lr=0.1")
    plan = FreezePlan(("backbone.conv1.weight",), (), unfreeze_at=2)
    with pytest.raises(DrivelabError, match="more than one process"):
        plan.check(total_batches=10, world_size=2)


def test_unfreeze_at_epoch_counts_whole_epochs(small_dataset: Path) -> None:
    cfg = config_for(small_dataset, "model.freeze=[backbone]", "model.unfreeze_at_epoch=2")
    plan = plan_freeze(cfg.model, fresh_policy(cfg), batches_per_epoch=7, lr=1e-3)
    assert plan is not None and plan.unfreeze_at == 14
    assert plan.frozen(13) and not plan.frozen(14)


def test_summary_counts_reflect_freeze(small_dataset: Path, tmp_path: Path) -> None:
    frozen = summarize_config(bn_config(small_dataset), with_shapes=False)
    plain = summarize_config(bn_config(small_dataset, "model.freeze=[]"), with_shapes=False)
    backbone = build_policy(bn_config(small_dataset).model, (3, 32, 32)).backbone
    weights = sum(p.numel() for p in backbone.parameters())
    assert frozen.counts.frozen == weights and plain.counts.frozen == 0
    assert frozen.counts.trainable == plain.counts.trainable - weights
    assert frozen.counts.total == plain.counts.total
    assert frozen.parts["backbone"].trainable == 0 and frozen.parts["neck"].frozen == 0

    path = tmp_path / "frozen.yaml"
    path.write_text(CONFIG.read_text(), encoding="utf-8")
    result = CliRunner().invoke(app, ["summary", str(path), *tiny(small_dataset, "model.freeze=[backbone.*]"),
                                      "--no-shapes"])
    assert result.exit_code == 0, result.output
    pilotnet = sum(p.numel() for p in fresh_policy(config_for(small_dataset)).backbone.parameters())
    assert f"Non-trainable params: {pilotnet:,} (frozen {pilotnet:,} +" in result.output
