"""Find the ultrasound image inside the screen capture and strip burned-in annotations.

Scanner exports show the B-mode image surrounded by static graphics: patient banner, settings text,
depth rulers, logos, grey-scale bars. `imaging_region` finds the image box, preferring what the scanner
declares (DICOM SequenceOfUltrasoundRegions) and otherwise the part of the screen that *changes over
time*: tissue speckle moves with breathing and probe motion, overlays do not. Boxes use half-open pixel
coordinates, so `frames[:, y0:y1, x0:x1]` is the crop and `x1 - x0` its width.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from alnvid.errors import AlnvidError
from alnvid.io.base import Video

_WORK_SIZE = 320  # long side (px) of the downsampled grid the detection runs on


@dataclass(frozen=True)
class Box:
    """Pixel rectangle [x0, x1) x [y0, y1) in frame coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        if min(self.x0, self.y0) < 0 or self.x1 <= self.x0 or self.y1 <= self.y0:
            raise AlnvidError(f"invalid box {self}: needs 0 <= x0 < x1 and 0 <= y0 < y1",
                              fix="give the box as x0,y0,x1,y1 in pixels with x1/y1 exclusive, e.g. 40,60,600,520.")

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    def clip(self, width: int, height: int) -> Box:
        """The part of the box inside a width x height frame."""
        x0, y0 = max(self.x0, 0), max(self.y0, 0)
        x1, y1 = min(self.x1, width), min(self.y1, height)
        if x1 <= x0 or y1 <= y0:
            raise AlnvidError(f"box {self} lies outside the {width}x{height} frame",
                              fix="correct the crop box (x0,y0,x1,y1 in pixels) for this file.")
        return Box(x0, y0, x1, y1)

    @classmethod
    def from_string(cls, text: str) -> Box:
        """Parse "x0,y0,x1,y1" (integers, spaces allowed), e.g. a manifest's per-file crop override."""
        parts = [p.strip() for p in str(text).split(",")]
        try:
            if len(parts) != 4:
                raise ValueError
            return cls(*(int(p) for p in parts))
        except ValueError:
            raise AlnvidError(f"cannot read crop box {text!r}",
                              fix="write it as four integers x0,y0,x1,y1 (pixels, x1/y1 exclusive), e.g. 40,60,600,520.") from None

    @classmethod
    def optional(cls, text: object) -> Box | None:
        """A manifest's `crop_box` cell: None when empty (or missing), else the parsed box."""
        return cls.from_string(text) if isinstance(text, str) and text.strip() else None

    def __str__(self) -> str:
        return f"{self.x0},{self.y0},{self.x1},{self.y1}"


def imaging_region(
    video: Video,
    *,
    use_dicom_regions: bool = True,
    region_formats: Collection[int] = (1,),
    motion_threshold: float = 0.5,
    max_frames: int = 64,
) -> Box:
    """Bounding box of the ultrasound image in `video`, clipped to the frame.

    1. DICOM SequenceOfUltrasoundRegions (if `use_dicom_regions`): union of regions whose
       RegionSpatialFormat is in `region_formats` (1 = 2D; M-mode/Doppler strips are ignored).
    2. Otherwise, motion: per-pixel temporal standard deviation over up to `max_frames` evenly spaced
       frames on a coarse grid (long side ~320 samples), thresholded at `motion_threshold` grey levels
       (burned-in graphics have exactly zero in lossless files, tissue rarely below 0.5), cleaned by
       morphological opening and closing; the box covers the largest moving component and every
       component at least 10% of its size (dark static gaps such as fluid split the image in parts).
    3. Single frames and static loops: the largest non-dark connected region.
    """
    height, width = video.frames.shape[1:3]
    if use_dicom_regions:
        boxes = [Box(r.x0, r.y0, r.x1 + 1, r.y1 + 1) for r in video.meta.ultrasound_regions
                 if r.spatial_format in region_formats and r.x1 >= r.x0 and r.y1 >= r.y0]
        if boxes:
            union = Box(min(b.x0 for b in boxes), min(b.y0 for b in boxes), max(b.x1 for b in boxes), max(b.y1 for b in boxes))
            return union.clip(width, height)

    step = max(1, -(-max(height, width) // _WORK_SIZE))
    picks = np.unique(np.linspace(0, video.n_frames - 1, min(video.n_frames, max_frames)).round().astype(int))
    # Point samples on a coarse grid (cheap, and speckle decorrelates per pixel); max over RGB keeps colour Doppler.
    grey = video.frames[picks, ::step, ::step].max(axis=-1).astype(np.float32)
    mask = None
    if grey.shape[0] >= 2:
        moving = _close(_open(grey.std(axis=0) > motion_threshold, 1), 3)
        if moving.mean() > 0.01:
            mask = _major_components(moving, min_fraction=0.1)
    if mask is None:
        bright = _close(_open(grey.mean(axis=0) > 12.0, 2), 3)
        mask = _major_components(bright, min_fraction=1.0) if bright.any() else np.ones_like(bright)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = Box(int(cols[0]) * step, int(rows[0]) * step, (int(cols[-1]) + 1) * step, (int(rows[-1]) + 1) * step)
    return box.clip(width, height)


def crop(video: Video | np.ndarray, box: Box) -> np.ndarray:
    """Frames (F, h, w, C) inside `box` (clipped to the frame); a view, not a copy."""
    frames = video.frames if isinstance(video, Video) else video
    b = box.clip(frames.shape[2], frames.shape[1])
    return frames[:, b.y0:b.y1, b.x0:b.x1]


def mask_static_overlays(
    frames: np.ndarray,
    box: Box,
    *,
    bright_level: int = 200,
    chroma_level: int = 50,
    static_tolerance: int = 8,
    glyph_contrast: int = 50,
    glyph_size: int = 40,
) -> np.ndarray:
    """Copy of `frames` (F, H, W, 3) with burned-in annotations inside `box` blanked: filled with the mean of the
    pixels around them, so neither the text nor its silhouette remains.

    A pixel counts as annotation when it is near-saturated in *every* frame (brightest channel >=
    `bright_level`), or static (range over time <= `static_tolerance`, which absorbs the jitter of
    frame-grabbed or lossy exports) and either coloured in every frame (channel spread >= `chroma_level`)
    or part of a glyph: a stroke at least `glyph_contrast` grey levels brighter than its surroundings
    (white top-hat, 11 px) in a component no taller than `glyph_size` px and no wider than 4 x `glyph_size`
    (a letter or a word; long reflectors such as fascia lines are not glyphs). That is how text,
    calipers, markers and colour graphics look. Their anti-aliased fringe (neighbours within 2 px that stay
    above half of `bright_level`, or are static and still a quarter of `glyph_contrast` above their
    surroundings) goes too. Tissue speckle and colour Doppler change between frames and are kept.
    Limits: needs >= 2 frames (a single frame is returned unchanged, since static cannot be told from
    tissue); small bright reflectors that stay put through a loop without probe or tissue motion are
    masked; text fainter than `glyph_contrast` over its background, or in glyphs larger than
    `glyph_size`, is not detected.
    """
    out = frames.copy()
    if frames.shape[0] < 2:
        return out
    b = box.clip(frames.shape[2], frames.shape[1])
    region = frames[:, b.y0:b.y1, b.x0:b.x1]
    lo, hi = region.min(axis=0), region.max(axis=0)
    floor = lo.max(axis=-1).astype(np.int16)  # brightest channel's minimum over time
    static = (hi.astype(np.int16) - lo).max(axis=-1) <= static_tolerance
    coloured = (floor - lo.min(axis=-1)) >= chroma_level
    contrast = floor - ndimage.grey_opening(floor, size=11)
    glyphs = _small_components(static & (contrast >= glyph_contrast), glyph_size, 4 * glyph_size)
    overlay = (floor >= bright_level) | (coloured & static) | glyphs
    fringe = (floor >= bright_level // 2) | (static & (contrast >= glyph_contrast // 4))
    overlay |= ndimage.binary_dilation(overlay, iterations=2) & fringe
    _fill_from_surroundings(out[:, b.y0:b.y1, b.x0:b.x1], overlay)
    return out


def _fill_from_surroundings(region: np.ndarray, mask: np.ndarray, sigma: float = 2.5) -> None:
    """Replace the `mask` pixels of every frame of `region` (F, h, w, 3, in place) by the Gaussian-weighted mean
    of the unmasked pixels around them: blanked text then leaves no dark silhouette on a grey background."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return
    margin = int(3 * sigma)
    y = slice(max(rows[0] - margin, 0), rows[-1] + margin + 1)
    x = slice(max(cols[0] - margin, 0), cols[-1] + margin + 1)
    hole = mask[y, x]
    keep = (~hole).astype(np.float32)
    weight = cv2.GaussianBlur(keep, (0, 0), sigma)[..., None]
    for frame in region[:, y, x]:
        mean = cv2.GaussianBlur(frame.astype(np.float32) * keep[..., None], (0, 0), sigma)
        fill = np.divide(mean, weight, out=np.zeros_like(mean), where=weight > 1e-3)
        frame[hole] = np.rint(fill[hole]).clip(0, 255).astype(frame.dtype)


def _small_components(mask: np.ndarray, max_height: int, max_width: int) -> np.ndarray:
    """The 8-connected components of `mask` whose bounding box fits in max_height x max_width."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    keep = [i for i, found in enumerate(ndimage.find_objects(labels), 1)
            if found and found[0].stop - found[0].start <= max_height and found[1].stop - found[1].start <= max_width]
    return np.isin(labels, keep)


def _open(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary opening that treats outside the frame as foreground, so the frame edge is not eroded."""
    return ndimage.binary_dilation(ndimage.binary_erosion(mask, iterations=iterations, border_value=1), iterations=iterations)


def _close(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary closing that treats outside the frame as foreground, so the frame edge is not eroded."""
    return ndimage.binary_erosion(ndimage.binary_dilation(mask, iterations=iterations), iterations=iterations, border_value=1)


def _major_components(mask: np.ndarray, *, min_fraction: float) -> np.ndarray:
    """Union of connected components at least `min_fraction` times the size of the largest."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1
    return np.isin(labels, keep)
