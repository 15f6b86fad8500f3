"""LightningDataModules for video clips and still frames of a validated cohort manifest.

Both share one splitting rule: a given `fold` of a patient-grouped, label-stratified k-fold over the
development rows (split train/val), else the manifest's `val` split, else a grouped hold-out of the training
patients. Every `test_*` split becomes its own test dataloader, in manifest order (`test_split_names`).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from alnvid.config import DataConfig
from alnvid.data.cache import PreprocessCache, Preprocessed
from alnvid.data.crop import Box
from alnvid.data.folds import holdout, patient_folds
from alnvid.data.gpu_augment import augment_batch, draw_params
from alnvid.data.manifest import TRAIN_SPLITS, Manifest, load_manifest
from alnvid.data.sampling import SeededShuffle, segment_indices
from alnvid.data.transforms import apply_to_clip, clip_transform, evaluation_views
from alnvid.errors import AlnvidError
from alnvid.utils import available_cores

ProgressFn = Callable[[int, int, str], None]
"""Called as progress(done, total, description) while the cache is filled."""

CACHE_WORKERS = 8
"""Processes that decode a cohort into the cache at most (each holds one decoded video in memory)."""


class _CohortDataset(Dataset):
    """Shared row bookkeeping: each item carries its patient, label and manifest line."""

    def __init__(self, rows: pd.DataFrame, cache: PreprocessCache, config: DataConfig, input_size: int, train: bool):
        self.rows = rows.reset_index(drop=True)
        self.cache = cache
        self.config = config
        self.train = train
        self.transform = clip_transform(config.crop_size, input_size, train=train and config.augment,
                                        elastic=config.elastic, intensity=config.intensity, zoom=config.zoom)
        self.on_device = train and config.augment and config.augment_device == "gpu"  # 'auto' unresolved: the CPU

    def __len__(self) -> int:
        return len(self.rows)

    def _video(self, row: pd.Series) -> Preprocessed:
        box = row.get("crop_box", "")
        return self.cache.load(row["path"], box=Box.optional(box))

    def _rng(self, seed: int) -> np.random.Generator:
        """This item's randomness (frame choice and augmentation) from its seed (see SeededShuffle).

        albumentations otherwise draws from its own unseeded generator, and runs would not repeat.
        """
        self.transform.set_random_seed(seed)
        return np.random.default_rng(seed)

    def _row(self, key: int | tuple[int, int]) -> tuple[pd.Series, int]:
        """Training keys are (index, seed) pairs from SeededShuffle; evaluation keys plain indices."""
        index, seed = key if isinstance(key, tuple) else (key, 0)
        return self.rows.iloc[index], seed

    def _item(self, row: pd.Series, x: torch.Tensor, frame_indices: np.ndarray) -> dict:
        return {"x": x, "label": int(row["label"]), "patient_id": str(row["patient_id"]),
                "line": int(row["line"]), "frame_indices": torch.as_tensor(frame_indices)}

    def _evaluation_item(self, row: pd.Series, frames: np.ndarray, input_kind: str) -> dict:
        """The item's `evaluation_views`; one clip, or one middle frame, without the views axis."""
        views, indices = evaluation_views(frames, self.config, input_kind, self.transform)
        several = self.config.eval_flip or (self.config.eval_clips > 1 if input_kind == "clip"
                                            else self.config.still_frames == "all")
        if several:
            return self._item(row, views, indices)
        return self._item(row, views[0], indices[0] if input_kind == "clip" else indices)

    def _unaugmented(self, row: pd.Series, frames: np.ndarray, frame_indices: np.ndarray,
                     rng: np.random.Generator) -> dict:
        """A training item for augmentation on the device: uint8 frames as cached, (T, H, W, 3) or one (H, W, 3),
        and this item's augmentation parameters (applied by CohortDataModule.on_after_batch_transfer)."""
        height, width = frames.shape[-3:-1]
        item = self._item(row, torch.from_numpy(np.ascontiguousarray(frames)), frame_indices)
        item["augment"] = draw_params(rng, height, width, self.config.crop_size, elastic=self.config.elastic,
                                      intensity=self.config.intensity, zoom=self.config.zoom)
        return item


class ClipDataset(_CohortDataset):
    """One clip of T frames per video, as (3, T, H, W) in [0, 1]; at evaluation with `eval_clips` K > 1, K clips
    spread over the loop, as (K, 3, T, H, W), and with `eval_flip` each clip's mirror image after them (2K, 3, T,
    H, W): the model averages their probabilities into one per video (`evaluation_views`)."""

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        row, seed = self._row(key)
        video = self._video(row)
        if not self.train:
            return self._evaluation_item(row, video.frames, "clip")
        rng = self._rng(seed)
        indices = segment_indices(video.n_frames, self.config.frames, random=self.config.augment, rng=rng)
        if self.on_device:
            return self._unaugmented(row, video.frames[indices], indices, rng)
        return self._item(row, apply_to_clip(self.transform, video.frames[indices]), indices)


class StillDataset(_CohortDataset):
    """Static images: the manifest's `still_path`, else keyframes from the video.

    `still_frames='middle'` takes the loop's middle frame; `'all'` takes a random frame per epoch in training
    and T evenly spaced frames at evaluation, shaped (T, 3, H, W), whose probabilities the model averages into
    one per video. Items are (3, H, W) otherwise. With `eval_flip`, evaluation items are their image(s) followed by
    the mirror images, (2, 3, H, W) or (2T, 3, H, W).
    """

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        row, seed = self._row(key)
        still = row.get("still_path", "")
        video = self.cache.load(still) if still else self._video(row)
        if not self.train:  # a still is one image: its middle frame, should the file hold several
            return self._evaluation_item(row, video.frames[[video.n_frames // 2]] if still else video.frames, "image")
        rng = self._rng(seed)
        every_frame = self.config.still_frames == "all" and not still
        indices = rng.integers(0, video.n_frames, size=1) if every_frame else np.array([video.n_frames // 2])
        if self.on_device:
            frame = np.array(video.frames[indices[0]])  # a copy: the memory-mapped cache is read-only
            return self._unaugmented(row, frame, indices, rng)
        return self._item(row, apply_to_clip(self.transform, video.frames[indices])[:, 0], indices)


class CohortDataModule(L.LightningDataModule):
    """Splits a manifest into train / validation / test sets and serves them from the preprocessing cache."""

    dataset_class: type[_CohortDataset] = ClipDataset

    def __init__(
        self,
        manifest: Manifest | str | Path,
        config: DataConfig,
        *,
        batch_size: int = 4,
        input_size: int | None = None,
        progress: ProgressFn | None = None,
    ):
        super().__init__()
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.config = config
        self.batch_size = batch_size
        self.input_size = input_size or config.input_size or config.crop_size
        self.progress = progress
        self.cache = PreprocessCache.from_config(config)
        self.train_rows, self.val_rows = development_split(self.manifest, config)
        self.test_rows = {split: self.manifest.rows(split) for split in self.manifest.test_splits}

    @property
    def test_split_names(self) -> list[str]:
        return list(self.test_rows)

    def prepare_data(self) -> None:
        """Decode every file once into the cache, before training, so bad files fail early and clearly."""
        files = list(self.manifest.table["path"])
        if "still_path" in self.manifest.table.columns:
            files += [p for p in self.manifest.table["still_path"] if p]
        table = self.manifest.table
        boxes = dict(zip(table["path"], table["crop_box"])) if "crop_box" in table.columns else {}
        self.cache.fill([(file, Box.optional(boxes.get(file, ""))) for file in files],
                        workers=min(CACHE_WORKERS, available_cores()), progress=self.progress)

    def dataset(self, rows: pd.DataFrame, *, train: bool) -> _CohortDataset:
        return self.dataset_class(rows, self.cache, self.config, self.input_size, train)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.train_rows, train=True), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.val_rows, train=False))

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.dataset(rows, train=False)) for rows in self.test_rows.values()]

    def split_dataloader(self, split: str) -> DataLoader:
        """Evaluation loader of any named split ('train', 'val', 'test_a', ...)."""
        rows = {"train": self.train_rows, "val": self.val_rows, **self.test_rows}.get(split)
        if rows is None:
            rows = self.manifest.rows(split)
        return self._loader(self.dataset(rows, train=False))

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Augment training batches drawn for augmentation on the device (`data.augment_device` 'gpu') where they
        now are: uint8 frames in, float clips (B, 3, T, H, W) or images (B, 3, H, W) in [0, 1] out."""
        if isinstance(batch, dict) and "augment" in batch:
            batch["x"] = augment_batch(batch["x"], batch.pop("augment"), self.config.crop_size, self.input_size)
        return batch

    def _loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader:
        workers = self.config.num_workers or 0  # None (auto) is resolved when a run starts; 0 elsewhere
        gpu = torch.cuda.is_available()
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=SeededShuffle(len(dataset), self.config.seed) if shuffle else None,
            drop_last=shuffle and len(dataset) > self.batch_size,
            num_workers=workers,
            pin_memory=self.config.pin_memory and gpu,
            persistent_workers=workers > 0,
            prefetch_factor=(4 if gpu else 2) if workers else None,  # keep batches queued ahead of a fast GPU
        )


class VideoDataModule(CohortDataModule):
    """Clips of T frames for the video models (TIN, R(2+1)D, ResNet-3D)."""

    dataset_class = ClipDataset


class StillDataModule(CohortDataModule):
    """Still images for the static models (ResNet50, InceptionV3, VGG19)."""

    dataset_class = StillDataset


def development_split(manifest: Manifest, config: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation rows of the development set (splits train and val)."""
    development = manifest.rows(list(TRAIN_SPLITS))
    if config.fold is not None:
        if not 0 <= config.fold < config.num_folds:
            raise AlnvidError(f"fold {config.fold} is outside 0..{config.num_folds - 1}")
        folds = patient_folds(development, config.num_folds, config.seed)
        is_val = folds == config.fold
    elif (development["split"] == "val").any():
        is_val = (development["split"] == "val").to_numpy()
    else:
        is_val = holdout(development, config.val_fraction, config.seed)
    return development[~is_val].reset_index(drop=True), development[is_val].reset_index(drop=True)
