"""The torch dataset over the store: stacking, history windows, targets, normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drivelab.data.episode_writer import write_episode
from drivelab.data.loader import DecodedEpisodes, EpisodeFrameDataset, collate_batch
from drivelab.data.records import DatasetError
from drivelab.data.store import DatasetStore
from test_store import META, make_record


@pytest.fixture()
def store(tmp_path: Path) -> DatasetStore:
    s = DatasetStore.create(tmp_path / "d.zarr", META)
    for i, t in enumerate((6, 9, 5)):
        write_episode(s, i, make_record(t, i))
    s.assign_splits(val=[2], test=[])
    return s


def test_sample_layout(store: DatasetStore) -> None:
    ds = EpisodeFrameDataset(store, "train", ["steering", "accel_brake"], frames=3,
                             history_signals=["speed", "purpose"], history_length=4)
    assert len(ds) == 15
    rec = make_record(9, 1)
    s = ds[6 + 2]  # episode 1, step 2
    assert s["frames"].shape == (9, 8, 12) and s["frames"].dtype == torch.uint8
    # stacked frames t-2, t-1, t on the channel axis, oldest first
    for j, t in enumerate((0, 1, 2)):
        np.testing.assert_array_equal(s["frames"][3 * j : 3 * j + 3].numpy(), rec.frames[t].transpose(2, 0, 1))
    # history: telemetry t-3..t, clamped to the episode start; never the label at t
    assert s["history"].shape == (4, 3)
    np.testing.assert_array_equal(s["history"][-1, 0].numpy(), rec.telemetry["speed"][2, 0])
    np.testing.assert_array_equal(s["history"][0].numpy(), s["history"][1].numpy())  # clamped
    np.testing.assert_array_equal(s["target/steering"].numpy(), rec.actions["steering"][2])


def test_batched_gather_matches_single_samples(store: DatasetStore) -> None:
    ds = EpisodeFrameDataset(store, "train", ["steering"], frames=2, history_signals=["speed"],
                             history_length=3)
    idx = [14, 0, 7, 3, 7, 12]
    batch = ds.__getitems__(idx)
    for row, i in enumerate(idx):
        single = ds[i]
        for key in batch:
            assert torch.equal(batch[key][row], single[key]), key
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate_batch)
    first = next(iter(loader))
    assert first["frames"].shape == (4, 6, 8, 12)


def test_decoded_episodes_carry_over_to_a_grown_dataset(store: DatasetStore) -> None:
    """The live trainer's periods: a later dataset over more episodes decodes only the new ones."""
    decoded = DecodedEpisodes()
    first = EpisodeFrameDataset(store, "train", ["steering"], history_signals=["speed"], history_length=2,
                                max_frames=6, decoded=decoded)
    first.preload()
    assert len(decoded) == 1 and first._cache.misses == 1
    write_episode(store, 3, make_record(7, 3))  # committed after the first period began
    grown = EpisodeFrameDataset(store, "train", ["steering"], history_signals=["speed"], history_length=2,
                                decoded=decoded)
    grown.preload()
    assert len(decoded) == 3  # episodes 0, 1 and the new 3 (2 is val)
    plain = EpisodeFrameDataset(store, "train", ["steering"], history_signals=["speed"], history_length=2)
    idx = list(range(len(plain)))
    for key, value in plain.__getitems__(idx).items():
        assert torch.equal(grown.__getitems__(idx)[key], value), key
    other = EpisodeFrameDataset(store, "train", ["accel_brake"], decoded=decoded)  # another layout
    np.testing.assert_array_equal(other[0]["target/accel_brake"].numpy(), make_record(6, 0).actions["accel_brake"][0])
    assert len(decoded) == 4  # ... decoded for itself, never served another layout's arrays


def test_val_split_and_errors(store: DatasetStore) -> None:
    assert len(EpisodeFrameDataset(store, "val", ["steering"])) == 5
    with pytest.raises(DatasetError, match="no committed episodes in the 'test' split"):
        EpisodeFrameDataset(store, "test", ["steering"])
    with pytest.raises(DatasetError, match=r"history signal\(s\) \['gear'\]"):
        EpisodeFrameDataset(store, "train", ["steering"], history_signals=["gear"], history_length=3)
    with pytest.raises(DatasetError, match=r"output\(s\) \['throttle'\]"):
        EpisodeFrameDataset(store, "train", ["throttle"])
