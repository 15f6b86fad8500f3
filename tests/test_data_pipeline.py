"""Folds, TSN sampling, clip augmentation, the preprocessing cache and the DataModules."""
from __future__ import annotations

import json
import multiprocessing

import numpy as np
import pandas as pd
import pytest
import torch

from alnvid.data import cache as cache_module
from alnvid.data.cache import PreprocessCache
from alnvid.data.datamodule import StillDataModule, VideoDataModule, development_split
from alnvid.data.folds import holdout, patient_folds
from alnvid.data.manifest import load_manifest
from alnvid.data.sampling import segment_indices
from alnvid.data.transforms import apply_to_clip, clip_transform
from alnvid.errors import AlnvidError


def _cohort_table(patients: int = 40, videos_per_patient: int = 2, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, patients)
    return pd.DataFrame({"patient_id": np.repeat([f"P{i}" for i in range(patients)], videos_per_patient),
                         "label": np.repeat(labels, videos_per_patient)})


def test_folds_group_patients_and_stratify():
    table = _cohort_table()
    folds = patient_folds(table, 5, seed=3)
    assert table.assign(fold=folds).groupby("patient_id")["fold"].nunique().max() == 1
    for k in range(5):
        in_fold = table[folds == k]
        assert set(in_fold["label"]) == {0, 1}
        # each fold holds about a fifth of each class's videos
        for label in (0, 1):
            share = (in_fold["label"] == label).sum() / (table["label"] == label).sum()
            assert 0.1 <= share <= 0.3
    assert np.array_equal(folds, patient_folds(table, 5, seed=3))
    assert not np.array_equal(folds, patient_folds(table, 5, seed=4))


def test_folds_need_enough_patients_per_class():
    table = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "label": [1, 0, 0, 0]})
    with pytest.raises(AlnvidError, match="which have 1 with label 1 and 3 with label 0") as info:
        patient_folds(table, 2)
    assert "needs at least 2 of each class" in info.value.fix


def test_holdout_is_grouped():
    table = _cohort_table()
    held = holdout(table, 0.2, seed=0)
    assert set(table[held]["patient_id"]).isdisjoint(table[~held]["patient_id"])
    patients = table.drop_duplicates("patient_id")
    for label in (0, 1):
        n = (patients["label"] == label).sum()
        assert table[held & (table["label"] == label)]["patient_id"].nunique() == round(0.2 * n)
    assert holdout(table, 0.4, seed=0).mean() == pytest.approx(0.4, abs=0.03)


def test_segment_indices_evaluation_takes_segment_centres():
    assert segment_indices(32, 4, random=False).tolist() == [4, 12, 20, 28]
    assert segment_indices(10, 4, random=False).tolist() == [1, 3, 6, 8]


def test_segment_indices_training_draws_one_frame_per_segment():
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices = segment_indices(32, 4, random=True, rng=rng)
        assert [i // 8 for i in indices] == [0, 1, 2, 3]


def test_short_loops_repeat_frames_in_order():
    indices = segment_indices(3, 8, random=False)
    assert indices.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert segment_indices(1, 4, random=True).tolist() == [0, 0, 0, 0]


def test_every_frame_of_a_clip_gets_the_same_augmentation():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    clip = np.stack([frame] * 6)
    transform = clip_transform(32, None, train=True, elastic=True)
    outputs = [apply_to_clip(transform, clip) for _ in range(20)]
    for out in outputs:
        assert out.shape == (3, 6, 32, 32)
        assert torch.equal(out, out[:, :1].expand_as(out))  # identical frames stay identical
    assert len({out.sum().item() for out in outputs}) > 1   # while different clips get different draws


def test_augmentation_moves_all_frames_alike():
    """Frames that differ by a constant keep differing by that constant: the same flip and crop hit every frame."""
    base = np.tile(np.arange(40, dtype=np.uint8)[None, :, None] * 3, (40, 1, 3))
    clip = np.stack([base + k for k in range(4)])
    transform = clip_transform(24, None, train=True, elastic=False)
    for _ in range(10):
        out = apply_to_clip(transform, clip) * 255
        for k in range(4):
            assert torch.allclose(out[:, k] - out[:, 0], torch.full_like(out[:, 0], k), atol=1e-3)


def test_evaluation_transform_is_a_centre_crop_scaled_to_unit_range():
    frame = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    out = apply_to_clip(clip_transform(6, None, train=False), frame[None])
    assert torch.allclose(out[:, 0].permute(1, 2, 0), torch.from_numpy(frame[2:8, 2:8]).float() / 255)


def test_cache_hits_without_decoding(tiny_cohort, tmp_path, monkeypatch):
    path = load_manifest(tiny_cohort).table["path"][0]
    first = PreprocessCache(tmp_path, size=48)
    video = first.load(path)
    assert first.decoded == 1
    assert video.frames.shape == (8, 48, 48, 3) and video.frames.dtype == np.uint8

    def no_decoding(*args, **kwargs):
        raise AssertionError("the decoder must not run on a cache hit")

    monkeypatch.setattr(cache_module, "read_video", no_decoding)
    second = PreprocessCache(tmp_path, size=48)
    again = second.load(path)
    assert second.decoded == 0
    assert isinstance(again.frames, np.memmap)
    assert np.array_equal(np.asarray(again.frames), video.frames)
    assert again.box == video.box
    # different preprocessing parameters are a different entry
    with pytest.raises(AssertionError, match="decoder must not run"):
        PreprocessCache(tmp_path, size=32).load(path)


def _fill(args):
    root, path = args
    return np.asarray(PreprocessCache(root, size=40).load(path).frames).sum()


def test_cache_is_safe_when_two_processes_fill_it(tiny_cohort, tmp_path):
    path = load_manifest(tiny_cohort).table["path"][1]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        sums = pool.map(_fill, [(tmp_path, path)] * 2)
    assert sums[0] == sums[1]
    arrays = list(tmp_path.rglob("*.npy"))
    assert len(arrays) == 1 and not list(tmp_path.rglob("*.tmp*"))
    assert np.asarray(PreprocessCache(tmp_path, size=40).load(path).frames).sum() == sums[0]
    info = json.loads(arrays[0].with_suffix(".json").read_text())
    assert set(info) == {"box", "source_height", "source_width", "frame_time_ms", "modality", "distinct_frames"}
    assert info["modality"] == "US" and info["distinct_frames"] == 8


def test_parallel_fill_equals_a_sequential_one_and_raises_the_same_error(tiny_cohort, tmp_path, monkeypatch):
    """Worker processes decode what a fill in one process would, pixel for pixel; a bad file fails as it would."""
    table = load_manifest(tiny_cohort).table
    files = [(path, None) for path in table["path"][:6]]
    monkeypatch.setattr(cache_module, "PARALLEL_FILL_MIN", 2)
    calls = []
    parallel = PreprocessCache(tmp_path / "parallel", size=40)
    parallel.fill(files, workers=2, progress=lambda done, total, name: calls.append((done, total)))
    assert parallel.decoded == 6 and calls[-1] == (6, 6) and len(calls) == 6
    sequential = PreprocessCache(tmp_path / "sequential", size=40)
    sequential.fill(files, workers=1)
    for path, _ in files:
        assert np.array_equal(np.asarray(parallel.load(path).frames), np.asarray(sequential.load(path).frames))
    assert parallel.decoded == 6  # the loads above hit the cache

    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a DICOM file")
    bad_files = [*files[:2], (str(broken), None), *[(path, None) for path in table["path"][6:9]]]
    errors = []
    for workers in (1, 2):
        with pytest.raises(AlnvidError) as error:
            PreprocessCache(tmp_path / f"bad_{workers}", size=40).fill(bad_files, workers=workers)
        errors.append(str(error.value))
    assert errors[0] == errors[1] and "broken.dcm" in errors[0]


def test_video_datamodule_batches(tiny_cohort, tiny_data_config):
    module = VideoDataModule(tiny_cohort, tiny_data_config, batch_size=3)
    module.prepare_data()
    assert module.test_split_names == ["test_a", "test_b"]
    batch = next(iter(module.train_dataloader()))
    assert batch["x"].shape == (3, 3, 4, 32, 32) and batch["x"].dtype == torch.float32
    assert 0.0 <= batch["x"].min() and batch["x"].max() <= 1.0
    assert batch["frame_indices"].shape == (3, 4)
    val = next(iter(module.val_dataloader()))
    assert torch.equal(val["frame_indices"][0], torch.tensor([1, 3, 5, 7]))  # segment centres of 8 frames
    tests = module.test_dataloader()
    assert [len(loader.dataset) for loader in tests] == [4, 4]
    patients = {name: set(rows["patient_id"]) for name, rows in
                {"train": module.train_rows, "val": module.val_rows, **module.test_rows}.items()}
    names = list(patients)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert patients[a].isdisjoint(patients[b]), (a, b)


def test_folds_of_the_datamodule_partition_the_development_set(tiny_cohort, tiny_data_config):
    manifest = load_manifest(tiny_cohort)
    seen = []
    for fold in range(3):
        tiny_data_config.fold, tiny_data_config.num_folds = fold, 3
        train, val = development_split(manifest, tiny_data_config)
        assert set(train["patient_id"]).isdisjoint(val["patient_id"])
        assert set(val["label"]) == {0, 1}
        seen += list(val["patient_id"])
    assert sorted(seen) == sorted(manifest.rows("train")["patient_id"])


def test_still_datamodule_middle_and_all_frames(tiny_cohort, tiny_data_config):
    middle = StillDataModule(tiny_cohort, tiny_data_config, batch_size=2)
    batch = next(iter(middle.val_dataloader()))
    assert batch["x"].shape == (2, 3, 32, 32)
    tiny_data_config.still_frames = "all"
    every = StillDataModule(tiny_cohort, tiny_data_config, batch_size=2)
    assert next(iter(every.train_dataloader()))["x"].shape == (2, 3, 32, 32)
    batch = next(iter(every.test_dataloader()[0]))
    assert batch["x"].shape == (2, 4, 3, 32, 32)


def test_a_still_is_scored_as_its_middle_frame_and_one_view_keeps_its_axis(tiny_cohort, tiny_data_config, tmp_path):
    """`still_frames: all` repeats a still (a multi-frame file given as the still: its middle frame) T times, and with
    T = 1 the item keeps its views axis, (1, 3, H, W), as evaluation with several views always did."""
    table = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False)
    table["path"] = [str(tiny_cohort.parent / p) for p in table["path"]]
    table["still_path"] = table["path"]  # each loop given as its own still
    table.to_csv(tmp_path / "manifest.csv", index=False)
    tiny_data_config.still_frames = "all"
    dataset = StillDataModule(tmp_path / "manifest.csv", tiny_data_config, batch_size=2).test_dataloader()[0].dataset
    item = dataset[0]
    video = dataset.cache.load(dataset.rows.iloc[0]["path"])
    middle = apply_to_clip(dataset.transform, video.frames[[video.n_frames // 2]])[:, 0]
    assert item["x"].shape == (4, 3, 32, 32)
    assert all(torch.equal(view, middle) for view in item["x"])
    tiny_data_config.frames = 1
    assert dataset[0]["x"].shape == (1, 3, 32, 32)
