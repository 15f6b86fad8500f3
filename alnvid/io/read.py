"""Format dispatch: one entry point that reads any supported file, plus cheap helpers for caching."""
from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path

from alnvid.errors import InputFileError
from alnvid.io.base import Video
from alnvid.io.dicom import dicom_frame_count, read_dicom
from alnvid.io.image import read_image
from alnvid.io.video import container_frame_count, read_container_video

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mpeg", ".mpg", ".gif", ".mkv", ".webm", ".wmv"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
ULTRASOUND = "US"
"""The DICOM Modality of ultrasound; files without one (videos, images) are taken as ultrasound."""


def read_video(path: str | Path) -> Video:
    """Read a DICOM, video container or still image into uint8 RGB frames (F, H, W, 3) and metadata.

    The format is chosen by extension; files with another or no extension (common for PACS exports)
    are read as DICOM when they carry the 'DICM' marker.
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "dicom":
        return read_dicom(path)
    if kind == "video":
        return read_container_video(path)
    return read_image(path)


def read_frame_count(path: str | Path) -> int:
    """Number of frames from the file header, without decoding pixels (1 for still images)."""
    path = Path(path)
    kind = _kind(path)
    if kind == "dicom":
        return dicom_frame_count(path)
    if kind == "video":
        return container_frame_count(path)
    return 1


def check_modality(modality: str | None, path: str | Path, allowed: Collection[str] = ()) -> None:
    """Refuse a file whose DICOM Modality is not ultrasound (e.g. CT) unless that modality is in `allowed`.

    The models learn breast ultrasound: a CT or MR slice would be scored as if it were one, silently.
    """
    if modality is None or modality.upper() == ULTRASOUND or modality.upper() in {m.upper() for m in allowed}:
        return
    raise InputFileError(f"not an ultrasound: the DICOM header gives modality {modality}", path=path,
                         fix=f"use ultrasound (US) loops only, or pass --allow-modality {modality} to use it anyway.")


def content_hash(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of the file's bytes, streamed, as a cache key that survives renames and moves."""
    path = Path(path)
    _check_exists(path)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _kind(path: Path) -> str:
    _check_exists(path)
    if path.stat().st_size == 0:
        raise InputFileError("file is empty (0 bytes)", path=path, fix="copy or export the file again.")
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    with path.open("rb") as fh:
        if fh.read(132)[128:] == b"DICM":
            return "dicom"
    supported = ", ".join(sorted(DICOM_SUFFIXES | VIDEO_SUFFIXES | IMAGE_SUFFIXES))
    raise InputFileError(f"unsupported file type {suffix or '(no extension)'} and no DICOM marker", path=path,
                         fix=f"convert it to DICOM or one of: {supported}.")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputFileError("file not found", path=path, fix="check the path (relative paths in a manifest are resolved against the manifest's folder).")
    if not path.is_file():
        raise InputFileError("not a regular file (is it a folder?)", path=path, fix="point to the file itself.")
