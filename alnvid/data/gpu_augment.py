"""The training augmentation in torch, for a collated batch of uint8 clips on any device (the GPU, after transfer).

The same steps as `alnvid.data.transforms.clip_transform(train=True)`: horizontal flip (p 0.5), elastic transform
(alpha 30, sigma 6, p 0.5, when enabled), random crop (of a random side resampled to the crop, with `zoom`),
optional resize to the network's input side, then [0, 1] (and the optional brightness and contrast).
The dataset draws each clip's parameters on the CPU from the item's own seeded generator (`draw_params`), so runs
repeat; `augment_batch` applies one set of parameters to every frame of a clip, in one gather (flip and crop) and
one `grid_sample` (elastic) for the whole batch, so the CPU workers only copy uint8 frames out of the cache.

The elastic field follows albumentations' construction, per-pixel noise normalised by its maximum, Gaussian-smoothed
with sigma and scaled by alpha (displacements in pixels), but is drawn as noise on a grid `ELASTIC_STEP` times
coarser (smoothed there, then upsampled): its spread, smoothness and bound |displacement| <= alpha are the same
(tests/test_gpu_augment.py compares them), at about a ninth of the random draws.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

ELASTIC_ALPHA = 30.0
ELASTIC_SIGMA = 6.0
ELASTIC_STEP = 3
"""Pixels between the coarse noise grid's points (sigma / 2: the smoothed field barely changes over a step)."""


def noise_grid_shape(height: int, width: int) -> tuple[int, int, int]:
    """(2, rows, columns) of the coarse elastic noise covering a height x width frame."""
    return 2, math.ceil((height - 1) / ELASTIC_STEP) + 1, math.ceil((width - 1) / ELASTIC_STEP) + 1


def draw_params(rng: np.random.Generator, height: int, width: int, crop_size: int, *, elastic: bool,
                intensity: float = 0.0, zoom: float = 0.0) -> dict:
    """One clip's augmentation: flip, crop corner (and with `zoom` > 0 the crop's side, `crop_size` x U(1 ± zoom),
    as `transforms.ZoomCrop` draws it), (when enabled) the elastic coin and its coarse noise, and (when
    `intensity` > 0) a brightness shift and contrast factor, as albumentations' RandomBrightnessContrast draws them.

    The noise is drawn even when the coin says no, so every item of a batch has the same keys and shapes.
    """
    side = crop_size
    if zoom:
        side = max(1, min(height, width, round(crop_size * float(rng.uniform(1 - zoom, 1 + zoom)))))
    params = {"flip": bool(rng.random() < 0.5),
              "top": int(rng.integers(0, height - side + 1)),
              "left": int(rng.integers(0, width - side + 1))}
    if zoom:
        params["side"] = side
    if elastic:
        params["elastic"] = bool(rng.random() < 0.5)
        params["noise"] = torch.from_numpy(rng.standard_normal(noise_grid_shape(height, width), dtype=np.float32))
    if intensity:
        params["contrast"] = float(1 + rng.uniform(-intensity, intensity))
        params["brightness"] = float(rng.uniform(-intensity, intensity))
    return params


def augment_batch(frames: torch.Tensor, params: dict, crop_size: int, input_size: int | None = None) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3) -> float (B, 3, T, s, s) in [0, 1]; stills (B, H, W, 3) -> (B, 3, s, s).

    `params` holds `draw_params`' values collated into tensors of B; s is `input_size` (default `crop_size`).
    Flip and crop are exact (pixels are copied); elastic clips, and with zoom every crop (cv2's INTER_LINEAR rule),
    are resampled bilinearly, zeros outside the frame.
    """
    still = frames.dim() == 4
    clips = frames.unsqueeze(1) if still else frames
    batch, length, height, width, channels = clips.shape
    device = clips.device
    flip = params["flip"].to(device=device, dtype=torch.bool)
    index = torch.arange(batch, device=device)[:, None, None]
    if "side" in params:  # zoom: every clip's crop has its own side, resampled to crop_size x crop_size
        out = _zoomed_crops(clips, params, crop_size, flip, index)
    else:
        out = _crops(clips, params, crop_size, flip, index)
    if input_size and input_size != crop_size:
        folded = out.reshape(batch, channels * length, crop_size, crop_size)
        folded = F.interpolate(folded, size=(input_size, input_size), mode="bilinear", align_corners=False,
                               antialias=True)
        out = folded.view(batch, channels, length, input_size, input_size)
    out = out.div_(255.0)
    if "contrast" in params:  # x * contrast + brightness, in [0, 1]: RandomBrightnessContrast's rule
        contrast = params["contrast"].to(device=device, dtype=out.dtype).view(batch, 1, 1, 1, 1)
        brightness = params["brightness"].to(device=device, dtype=out.dtype).view(batch, 1, 1, 1, 1)
        out = out.mul_(contrast).add_(brightness).clamp_(0.0, 1.0)
    return out[:, :, 0] if still else out


def _crops(clips: torch.Tensor, params: dict, crop_size: int, flip: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Flip, elastic (for the clips whose coin says so) and crop of uint8 clips (B, T, H, W, 3) -> (B, 3, T, h, w)."""
    batch, length, height, width, channels = clips.shape
    device = clips.device
    rows = params["top"].to(device).long()[:, None] + torch.arange(crop_size, device=device)  # (B, h)
    cols = params["left"].to(device).long()[:, None] + torch.arange(crop_size, device=device)  # (B, w), flipped frame
    source_cols = torch.where(flip[:, None], width - 1 - cols, cols)
    out = clips[index, :, rows[:, :, None], source_cols[:, None, :]]  # (B, h, w, T, 3)
    out = out.permute(0, 4, 3, 1, 2).float()  # (B, 3, T, h, w)
    if "noise" in params:
        y, x = _warped(params, rows[:, :, None].float(), cols[:, None, :].float(), flip, index, height, width)
        warped = _sample(clips, x, y)
        on = params["elastic"].to(device=device, dtype=torch.bool).view(batch, 1, 1, 1, 1)
        out = torch.where(on, warped, out)  # no host sync to pick the elastic clips
    return out


def _zoomed_crops(clips: torch.Tensor, params: dict, crop_size: int, flip: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:
    """As `_crops`, for crops of side `params['side']` resized bilinearly to crop_size (cv2's half-pixel rule)."""
    batch, length, height, width, channels = clips.shape
    device = clips.device
    side = params["side"].to(device).float()[:, None]  # (B, 1)
    steps = (torch.arange(crop_size, device=device, dtype=torch.float32) + 0.5) / crop_size  # (h,)
    top, left = (params[k].to(device).float()[:, None] for k in ("top", "left"))
    rows = (top + steps * side - 0.5).clamp(top, top + side - 1)  # (B, h), source rows
    cols = (left + steps * side - 0.5).clamp(left, left + side - 1)  # (B, w), in the flipped frame
    y, x = rows[:, :, None].expand(-1, -1, crop_size), cols[:, None, :].expand(-1, crop_size, -1)
    source_y, source_x = y, torch.where(flip[:, None, None], width - 1 - x, x)
    if "noise" in params:
        shifted_y, shifted_x = _warped(params, y, x, flip, index, height, width)
        on = params["elastic"].to(device=device, dtype=torch.bool).view(batch, 1, 1)
        source_y, source_x = torch.where(on, shifted_y, source_y), torch.where(on, shifted_x, source_x)
    return _sample(clips, source_x, source_y)


def _warped(params: dict, y: torch.Tensor, x: torch.Tensor, flip: torch.Tensor, index: torch.Tensor, height: int,
            width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source coordinates in the unflipped frame of the points (y, x) (B, h, w) of the flipped, elastic frame; the
    displacement is the field's at the nearest pixel."""
    shift = elastic_displacement(params["noise"].to(y.device), height, width)  # (B, 2, H, W) as (dx, dy)
    near_y = y.round().long().clamp(0, height - 1)
    near_x = x.round().long().clamp(0, width - 1)
    shift = shift[index, :, near_y, near_x]  # (B, h, w, 2)
    source_x = x + shift[..., 0]
    return y + shift[..., 1], torch.where(flip[:, None, None], width - 1 - source_x, source_x)


def _sample(clips: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (B, 3, T, h, w) of uint8 clips (B, T, H, W, 3) at pixel coordinates x, y (B, h, w); zeros
    outside the frame."""
    batch, length, height, width, channels = clips.shape
    grid = torch.stack([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)
    planes = clips.permute(0, 1, 4, 2, 3).reshape(batch, length * channels, height, width).float()
    sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return sampled.view(batch, length, channels, *x.shape[1:]).transpose(1, 2)


def elastic_displacement(noise: torch.Tensor, height: int, width: int, alpha: float = ELASTIC_ALPHA,
                         sigma: float = ELASTIC_SIGMA) -> torch.Tensor:
    """Displacements (B, 2, H, W) in pixels, as (dx, dy), from coarse standard-normal noise (B, 2, rows, cols).

    albumentations normalises per-pixel noise by its maximum, which for 2 x H x W draws is about the
    1 - 1/(4HW) normal quantile; coarse noise stands in for ELASTIC_STEP^2 pixels each, so it is scaled by
    1 / ELASTIC_STEP more. Clamping it to [-1, 1] (never reached in practice) keeps |displacement| <= alpha,
    since smoothing and bilinear upsampling only average.
    """
    peak = float(torch.special.ndtri(torch.tensor(1 - 1 / (4 * height * width), dtype=torch.float64)))
    field = (noise.float() / (ELASTIC_STEP * peak)).clamp(-1, 1)
    field = _gaussian_blur(field, sigma / ELASTIC_STEP)
    rows, cols = (field.shape[-2] - 1) * ELASTIC_STEP + 1, (field.shape[-1] - 1) * ELASTIC_STEP + 1
    field = F.interpolate(field, size=(rows, cols), mode="bilinear", align_corners=True)
    return alpha * field[..., :height, :width]


def _gaussian_blur(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, C, H, W), kernel radius 4 sigma summing to 1, edges replicated."""
    radius = math.ceil(4 * sigma)
    taps = torch.arange(-radius, radius + 1, device=field.device, dtype=field.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = field.shape[1]
    field = F.pad(field, (radius, radius, radius, radius), mode="replicate")
    field = F.conv2d(field, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(field, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
