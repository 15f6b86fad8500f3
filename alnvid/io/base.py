"""The in-memory video every reader returns, with de-identified technical metadata only."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

Source = Literal["dicom", "video", "image"]


@dataclass(frozen=True)
class Region:
    """One item of DICOM SequenceOfUltrasoundRegions (0018,6011).

    Coordinates are copied as the header states them: pixel columns/rows with *inclusive* max
    (RegionLocationMaxX1/Y1), so they can be checked against the file by eye. `spatial_format`
    1 is a 2D image, 2 M-mode, 3 spectral, 4 waveform; `data_type` 1 is tissue, 2 colour flow,
    3 PW Doppler; physical units 3 are centimetres and `delta_x`/`delta_y` are units per pixel.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    spatial_format: int | None = None
    data_type: int | None = None
    physical_units_x: int | None = None
    physical_units_y: int | None = None
    delta_x: float | None = None
    delta_y: float | None = None


@dataclass(frozen=True)
class VideoMeta:
    """Technical metadata of a decoded file; never anything that identifies a person or a date.

    `frame_time_ms`/`fps` are None when the file does not state a frame rate (still images, DICOMs
    without FrameTime/FrameTimeVector/CineRate). `pixel_spacing_mm` is (row, column) spacing from
    PixelSpacing, else from the first 2D ultrasound region calibrated in centimetres.
    `intensity_mapping` records how stored values became uint8: "none" (already 8-bit), "window"
    (WindowCenter/Width), "voi_lut" (VOI LUT Sequence), "minmax" (whole-loop min–max), "palette"
    or "rescale" (bit-depth scaling of colour data).
    """

    source: Source
    n_frames: int
    height: int
    width: int
    frame_time_ms: float | None = None
    fps: float | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    ultrasound_regions: tuple[Region, ...] = ()
    photometric_interpretation: str | None = None
    transfer_syntax: str | None = None
    bits_stored: int | None = None
    manufacturer: str | None = None
    manufacturer_model_name: str | None = None
    modality: str | None = None
    codec: str | None = None
    intensity_mapping: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (regions as a list of dicts, spacing as a list)."""
        out = asdict(self)
        out["ultrasound_regions"] = [asdict(r) for r in self.ultrasound_regions]
        if self.pixel_spacing_mm is not None:
            out["pixel_spacing_mm"] = list(self.pixel_spacing_mm)
        return out


@dataclass(frozen=True)
class Video:
    """Decoded frames as uint8 RGB, shape (F, H, W, 3), plus metadata.

    Every reader returns this single layout: greyscale sources are replicated to three identical
    channels and colour sources are converted to RGB, so crops, transforms and models never need to
    branch on the source format. Still images are one-frame videos.
    """

    frames: np.ndarray
    meta: VideoMeta = field(repr=False)

    def __post_init__(self) -> None:
        f = self.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise ValueError(f"Video.frames must be uint8 (F, H, W, 3), got {f.dtype} {f.shape}")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    def __repr__(self) -> str:
        return f"Video(frames={tuple(self.frames.shape)}, source={self.meta.source!r}, fps={self.meta.fps})"
