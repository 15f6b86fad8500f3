"""The study's augmentation, applied with identical parameters to every frame of a clip.

Training: random horizontal flip, elastic transform, random crop (resize -> crop, e.g. 256 -> 224; with a zoom,
a crop of random side resized to the crop's);
evaluation: centre crop (and, with `data.eval_flip`, its mirror image too: `with_mirror_views`), of the views that
`evaluation_views` picks.
Then optional rescale to the network's input side and scaling to [0, 1].
albumentations' `images=` target draws one set of random parameters for the whole stack of frames.
`alnvid.data.gpu_augment` does the training steps in torch on a collated batch instead (`data.augment_device`).
"""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from alnvid.config import DataConfig
from alnvid.data.gpu_augment import ELASTIC_ALPHA, ELASTIC_SIGMA
from alnvid.data.sampling import eval_clip_indices, segment_indices


def clip_transform(crop_size: int, input_size: int | None, *, train: bool, elastic: bool = True,
                   intensity: float = 0.0, zoom: float = 0.0) -> A.Compose:
    """The albumentations pipeline for one clip (or one still image); `intensity` > 0 adds a random brightness
    (± intensity of white) and contrast (× 1 ± intensity) in training."""
    steps: list[A.BasicTransform] = []
    if train:
        steps.append(A.HorizontalFlip(p=0.5))
        if elastic:
            steps.append(A.ElasticTransform(alpha=ELASTIC_ALPHA, sigma=ELASTIC_SIGMA, p=0.5))
        if intensity:
            steps.append(A.RandomBrightnessContrast(brightness_limit=intensity, contrast_limit=intensity, p=1.0))
        if zoom:
            steps.append(ZoomCrop(crop_size, zoom))
        else:
            steps.append(A.RandomCrop(crop_size, crop_size))
    else:
        steps.append(A.CenterCrop(crop_size, crop_size))
    if input_size and input_size != crop_size:
        steps.append(A.Resize(input_size, input_size))
    return A.Compose(steps)


class ZoomCrop(A.ImageOnlyTransform):
    """A square crop whose side is `crop_size` x u, u uniform in [1 - zoom, 1 + zoom] (at most the frame), at a
    random place, resized to `crop_size`: `RandomCrop` with a random scale, the same for every frame of a clip."""

    def __init__(self, crop_size: int, zoom: float, p: float = 1.0):
        super().__init__(p=p)
        self.crop_size, self.zoom = crop_size, zoom

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        height, width = params["shape"][:2]
        scale = self.py_random.uniform(1 - self.zoom, 1 + self.zoom)
        side = max(1, min(height, width, round(self.crop_size * scale)))
        return {"top": self.py_random.randint(0, height - side), "left": self.py_random.randint(0, width - side),
                "side": side}

    def apply(self, img: np.ndarray, top: int, left: int, side: int, **params) -> np.ndarray:
        crop = img[top:top + side, left:left + side]
        if side == self.crop_size:
            return crop
        return cv2.resize(crop, (self.crop_size, self.crop_size), interpolation=cv2.INTER_LINEAR)


def apply_to_clip(transform: A.Compose, frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, h, w) float in [0, 1], every frame transformed alike."""
    out = transform(images=np.ascontiguousarray(frames))["images"]
    return torch.from_numpy(np.ascontiguousarray(out)).permute(3, 0, 1, 2).float().div_(255.0)


def with_mirror_views(views: torch.Tensor) -> torch.Tensor:
    """An item's evaluation views (V, ...), clips or images, followed by their left-right mirror images: (2V, ...),
    whose probabilities the model averages (`data.eval_flip`)."""
    return torch.cat([views, views.flip(-1)])


def evaluation_views(frames: np.ndarray, config: DataConfig, input_kind: str,
                     transform: A.Compose) -> tuple[torch.Tensor, np.ndarray]:
    """What a video is scored from at evaluation: the one rule of validation, test, predict and explain.

    `frames` is the preprocessed loop (F, H, W, 3), `transform` the evaluation `clip_transform`. A clip model gets
    `eval_clips` K interleaved TSN clips, (K, 3, T, H, W), from the loop frames (K, T); a static model the middle
    frame, or the T segment centres with `still_frames` 'all' (a still image then repeats), (V, 3, H, W), from the
    loop frames (V,). With `eval_flip` their mirror images follow, doubling the first axis.
    """
    n_frames = len(frames)
    if input_kind == "clip":
        indices = eval_clip_indices(n_frames, config.frames, config.eval_clips)
        views = torch.stack([apply_to_clip(transform, frames[clip]) for clip in indices])
    else:
        every = config.still_frames == "all"
        indices = segment_indices(n_frames, config.frames, random=False) if every else np.array([n_frames // 2])
        views = apply_to_clip(transform, frames[indices]).permute(1, 0, 2, 3)
    return (with_mirror_views(views) if config.eval_flip else views.contiguous()), indices
