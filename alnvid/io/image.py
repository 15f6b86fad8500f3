"""Still-image reader (Pillow) returning a one-frame Video, e.g. for a manifest's still_path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from alnvid.errors import InputFileError
from alnvid.io.base import Video, VideoMeta


def read_image(path: Path) -> Video:
    """Decode a png/jpg/bmp/tiff into (1, H, W, 3) uint8 RGB; 16-bit greyscale is min–max scaled."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            mode = img.mode
            if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                values = np.asarray(img, dtype=np.float64)
                lo, hi = float(values.min()), float(values.max())
                grey = np.rint((values - lo) / (hi - lo) * 255) if hi > lo else np.zeros_like(values)
                rgb, mapping = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1), "minmax"
            else:
                rgb, mapping = np.asarray(img.convert("RGB"), dtype=np.uint8), "none"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputFileError(f"image could not be decoded ({exc})", path=path,
                             fix="re-export the image (the file is probably truncated or corrupt) as png or jpg.") from exc
    meta = VideoMeta(source="image", n_frames=1, height=rgb.shape[0], width=rgb.shape[1],
                     photometric_interpretation=mode, intensity_mapping=mapping)
    return Video(frames=np.ascontiguousarray(rgb[None]), meta=meta)
