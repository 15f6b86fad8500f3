"""Readers for ultrasound DICOM, video containers and still images, all returning uint8 RGB (F, H, W, 3)."""
from __future__ import annotations

from alnvid.io.base import Region, Video, VideoMeta
from alnvid.io.read import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    check_modality,
    content_hash,
    read_frame_count,
    read_video,
)

__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Region",
    "Video",
    "VideoMeta",
    "check_modality",
    "content_hash",
    "read_frame_count",
    "read_video",
]
