"""DICOM reader (pydicom 3 + pylibjpeg plugins) for ultrasound cine loops and still images.

Colour handling: pydicom 3's decoders are asked for RGB (`as_rgb=True`, its default), which converts
YBR_FULL / YBR_FULL_422 (JPEG Baseline and uncompressed) and YBR_RCT / YBR_ICT (JPEG 2000) to RGB;
the photometric interpretation *after* decoding decides what happens next, so colours are never
converted twice. PALETTE COLOR goes through the file's (possibly segmented, possibly 16-bit) LUT.

Greyscale with more than 8 stored bits is mapped to uint8 by, in order of preference, the VOI LUT
Sequence, the first WindowCenter/WindowWidth pair (after any Modality LUT/rescale), else a linear
min–max over the *whole loop* (one mapping for all frames, so brightness does not flicker between
frames). 8-bit greyscale is kept as stored. MONOCHROME1 is inverted last so bright means echogenic.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    convert_color_space,
    get_decoder,
)
from pydicom.uid import ImplicitVRLittleEndian

from alnvid.errors import InputFileError
from alnvid.io.base import Region, Video, VideoMeta

_REEXPORT_FIX = "re-export the loop from the scanner or PACS (the copy is probably truncated or corrupt)."


def read_dataset(path: Path, *, with_pixels: bool = True) -> Dataset:
    """Parse a DICOM file, accepting files without the 128-byte preamble, or raise InputFileError."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forced = False
        try:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=not with_pixels)
            except InvalidDicomError:
                forced = True
                ds = pydicom.dcmread(path, stop_before_pixels=not with_pixels, force=True)
        except Exception as exc:  # pydicom raises many types for malformed files; report them as one
            raise InputFileError(f"not a readable DICOM file ({type(exc).__name__}: {exc})", path=path,
                                 fix=_REEXPORT_FIX) from exc
    if any("End of file reached" in str(w.message) for w in caught):
        # pydicom drops a truncated encapsulated PixelData with only a warning
        raise InputFileError("the file is truncated: it ends inside the pixel data", path=path, fix=_REEXPORT_FIX)
    if "Rows" not in ds and forced:
        raise InputFileError("not a readable DICOM file (no DICOM marker and no image attributes)", path=path,
                             fix="point to the DICOM file that holds the ultrasound image or cine loop.")
    if "Rows" not in ds and _ends_inside_header(ds, path):
        raise InputFileError("the file is truncated or corrupt: it ends inside its header, before the image",
                             path=path, fix=_REEXPORT_FIX)
    if "Rows" not in ds:
        raise InputFileError("not a DICOM image (no Rows attribute; is it a report, DICOMDIR or other file?)",
                             path=path, fix="point to the DICOM file that holds the ultrasound image or cine loop.")
    return ds


def _ends_inside_header(ds: Dataset, path: Path) -> bool:
    """A header without image attributes that was cut short: no elements at all, a last element running past (or
    stopping short of) the end of the file, or a header that names an image storage class."""
    if not len(ds):
        return True
    last = ds.get_item(list(ds.keys())[-1])
    if getattr(last, "value_tell", None) is not None and last.length != 0xFFFFFFFF:
        if last.value_tell + last.length != path.stat().st_size:
            return True
    sop_class = ds.file_meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")
    return sop_class is not None and "Image Storage" in getattr(sop_class, "name", "")


def dicom_frame_count(path: Path) -> int:
    """NumberOfFrames from the header, without reading pixel data."""
    return int(read_dataset(path, with_pixels=False).get("NumberOfFrames", 1) or 1)


def read_dicom(path: Path) -> Video:
    """Decode every frame of a DICOM file into a uint8 RGB Video."""
    ds = read_dataset(path)
    if "PixelData" not in ds:
        raise InputFileError("DICOM file has no pixel data", path=path,
                             fix="point to the image or cine-loop object, not a structured report or presentation state.")
    tsyntax = ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise InputFileError(f"transfer syntax {tsyntax.name} is not supported", path=path,
                             fix="transcode the file to an uncompressed or JPEG transfer syntax (e.g. `gdcmconv --raw`).") from exc
    try:
        arr, info = decoder.as_array(ds, as_rgb=True)
    except Exception as exc:  # truncated/corrupt pixel data surfaces as ValueError, RuntimeError, EOFError...
        raise InputFileError(f"pixel data could not be decoded ({type(exc).__name__}: {exc})", path=path,
                             fix=_REEXPORT_FIX) from exc

    n_frames, rows, cols = int(info.get("number_of_frames", 1) or 1), int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1))
    arr = arr.reshape(n_frames, rows, cols, samples)
    photometric = info.get("photometric_interpretation", ds.get("PhotometricInterpretation", ""))
    photometric = str(getattr(photometric, "value", photometric))  # pydicom returns a str-Enum
    bits_stored = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
    frames, mapping = _to_rgb8(arr, ds, photometric, bits_stored, path)

    regions = _ultrasound_regions(ds)
    frame_time = _frame_time_ms(ds)
    meta = VideoMeta(
        source="dicom",
        n_frames=n_frames,
        height=rows,
        width=cols,
        frame_time_ms=frame_time,
        fps=None if frame_time is None else 1000.0 / frame_time,
        pixel_spacing_mm=_pixel_spacing(ds, regions),
        ultrasound_regions=regions,
        photometric_interpretation=str(ds.get("PhotometricInterpretation", photometric)),
        transfer_syntax=tsyntax.name,
        bits_stored=bits_stored,
        manufacturer=_text(ds, "Manufacturer"),
        manufacturer_model_name=_text(ds, "ManufacturerModelName"),
        modality=_text(ds, "Modality"),
        intensity_mapping=mapping,
    )
    return Video(frames=frames, meta=meta)


def _to_rgb8(arr: np.ndarray, ds: Dataset, photometric: str, bits_stored: int, path: Path) -> tuple[np.ndarray, str]:
    """(F, H, W, S) decoded samples -> (F, H, W, 3) uint8 RGB and the name of the intensity mapping."""
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr[..., 0], ds)
        if rgb.dtype != np.uint8 and rgb.max() > 255:  # 16-bit LUT entries; some vendors store 8-bit values in them
            rgb = np.rint(rgb / 257.0)
        return rgb.astype(np.uint8), "palette"
    if photometric in ("YBR_FULL", "YBR_FULL_422") and arr.dtype == np.uint8:
        arr, photometric = convert_color_space(arr, photometric, "RGB"), "RGB"
    if photometric == "RGB":
        if arr.dtype == np.uint8:
            return np.ascontiguousarray(arr), "none"
        return _scale_bits(arr, bits_stored), "rescale"
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey, mapping = _grey_to_uint8(arr[..., 0], ds, bits_stored)
        if photometric == "MONOCHROME1":
            grey = 255 - grey
        return np.repeat(grey[..., None], 3, axis=-1), mapping
    raise InputFileError(f"photometric interpretation {photometric!r} is not supported", path=path,
                         fix="export the loop as RGB, YBR_FULL(_422), PALETTE COLOR or MONOCHROME.")


def _scale_bits(arr: np.ndarray, bits_stored: int) -> np.ndarray:
    top = float(2 ** min(bits_stored, arr.dtype.itemsize * 8) - 1)
    return np.rint(np.clip(arr, 0, top) * (255.0 / top)).astype(np.uint8)


def _grey_to_uint8(grey: np.ndarray, ds: Dataset, bits_stored: int) -> tuple[np.ndarray, str]:
    if bits_stored <= 8 and grey.dtype == np.uint8:
        return grey, "none"
    values = apply_modality_lut(grey, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        out = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64)
        return np.rint(np.clip(out / (2**lut_bits - 1), 0, 1) * 255).astype(np.uint8), "voi_lut"
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        return _window(values, center, width, str(ds.get("VOILUTFunction", "LINEAR")).upper()), "window"
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    return np.rint(scaled * 255).astype(np.uint8), "minmax"


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 VOI windowing to [0, 1], then to uint8."""
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        y = (x - center) / width + 0.5
    else:
        y = (x - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5
    return np.rint(np.clip(y, 0.0, 1.0) * 255).astype(np.uint8)


def _first(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    return None if value in (None, "") else float(value)  # type: ignore[arg-type]


def _frame_time_ms(ds: Dataset) -> float | None:
    if ds.get("FrameTime"):
        return float(ds.FrameTime)
    vector = ds.get("FrameTimeVector")
    if vector is not None and len(vector) > 1:
        # The first entry is the increment to frame 1, i.e. 0 by definition; average the rest.
        return float(np.mean([float(v) for v in list(vector)[1:]]))
    for rate_tag in ("CineRate", "RecommendedDisplayFrameRate"):
        if ds.get(rate_tag):
            return 1000.0 / float(ds.get(rate_tag))
    return None


def _ultrasound_regions(ds: Dataset) -> tuple[Region, ...]:
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions", []):
        corners = [item.get(k) for k in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")]
        if any(c is None for c in corners):
            continue
        regions.append(Region(
            *(int(c) for c in corners),
            spatial_format=_int_or_none(item.get("RegionSpatialFormat")),
            data_type=_int_or_none(item.get("RegionDataType")),
            physical_units_x=_int_or_none(item.get("PhysicalUnitsXDirection")),
            physical_units_y=_int_or_none(item.get("PhysicalUnitsYDirection")),
            delta_x=_float_or_none(item.get("PhysicalDeltaX")),
            delta_y=_float_or_none(item.get("PhysicalDeltaY")),
        ))
    return tuple(regions)


def _pixel_spacing(ds: Dataset, regions: tuple[Region, ...]) -> tuple[float, float] | None:
    spacing = ds.get("PixelSpacing")
    if spacing is not None and len(spacing) == 2 and all(float(s) > 0 for s in spacing):
        return float(spacing[0]), float(spacing[1])
    for r in regions:  # units 3 = cm
        if r.spatial_format == 1 and r.physical_units_x == 3 and r.physical_units_y == 3 and r.delta_x and r.delta_y:
            return abs(r.delta_y) * 10.0, abs(r.delta_x) * 10.0
    return None


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value).strip() or None if value is not None else None


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
