"""DICOM reader on real vendor files from pydicom-data, pydicom's own test files and deid-data."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder  # noqa: E402

from alnvid.errors import InputFileError  # noqa: E402
from alnvid.io import content_hash, read_frame_count, read_video  # noqa: E402


def _testdata(name: str) -> Path:
    """A file from pydicom's bundled test files or the pydicom-data package (no download)."""
    from pydicom.data import get_testdata_file

    try:
        found = get_testdata_file(name, download=False)
    except TypeError:  # older pydicom without the download flag
        found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} not available: install the test extras (`pip install -e .[test]`, pydicom-data)")
    return Path(found)


def _deid(name: str) -> Path:
    deid_data = pytest.importorskip("deid_data", reason="deid-data not installed: `pip install -e .[test]`")
    return Path(deid_data.__file__).parent / "data" / "ultrasounds" / name


@pytest.fixture(scope="module")
def greyscale_cine(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("deid")
    with zipfile.ZipFile(_deid("GREYSCALE_CINE.zip")) as zf:
        zf.extract("GREYSCALE_CINE.dcm", folder)
    return folder / "GREYSCALE_CINE.dcm"


def _raw(path: Path, as_rgb: bool = False) -> np.ndarray:
    """Decoded samples straight from pydicom without colour conversion (the independent reference)."""
    ds = pydicom.dcmread(path)
    arr, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, as_rgb=as_rgb)
    return arr


def test_jpeg_baseline_ybr_full_422_multiframe_is_rgb():
    path = _testdata("examples_ybr_color.dcm")
    video = read_video(path)
    assert video.frames.shape == (30, 240, 320, 3) and video.frames.dtype == np.uint8
    assert video.meta.photometric_interpretation == "YBR_FULL_422"
    assert video.meta.transfer_syntax == "JPEG Baseline (Process 1)"
    assert video.meta.frame_time_ms == pytest.approx(33.333) and video.meta.fps == pytest.approx(30.0, abs=1e-3)
    # Independent path: raw YCbCr samples converted with pydicom's own colour-space transform.
    expected = convert_color_space(_raw(path), "YBR_FULL", "RGB")
    assert np.abs(video.frames.astype(int) - expected).max() <= 2
    assert np.abs(video.frames.astype(int) - expected).mean() < 0.6
    # Grey tissue must stay grey (a wrong or double YBR conversion tints it green/purple) and the
    # green probe marker must be green.
    sector = video.frames[:, 40:200, 60:260].astype(int)
    assert np.abs(sector[..., 0] - sector[..., 1]).max() == 0 and np.abs(sector[..., 1] - sector[..., 2]).max() <= 2
    np.testing.assert_array_equal(video.frames[0, 20, 190], [73, 143, 119])


def test_jpeg_baseline_120_frames_and_regions():
    video = read_video(_testdata("color3d_jpeg_baseline.dcm"))
    assert video.frames.shape == (120, 480, 640, 3)
    region = video.meta.ultrasound_regions[0]
    assert region.spatial_format == 1 and region.physical_units_x == 3


def test_rle_palette_color_two_frames():
    path = _testdata("OBXXXX1A_rle_2frame.dcm")
    video = read_video(path)
    assert video.frames.shape == (2, 600, 800, 3)
    ds = pydicom.dcmread(path)
    expected = np.rint(apply_color_lut(_raw(path), ds) / 257.0).astype(np.uint8)  # 16-bit LUT entries -> 8 bit
    np.testing.assert_array_equal(video.frames, expected)
    np.testing.assert_array_equal(video.frames[1, 300, 400], [57, 96, 149])
    assert len(video.meta.ultrasound_regions) == 2 and video.meta.intensity_mapping == "palette"


@pytest.mark.parametrize("name", ["gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"])
def test_palette_color_16bit_segmented_lut_little_and_big_endian(name):
    path = _testdata(name)
    video = read_video(path)
    assert video.frames.shape == (1, 480, 640, 3)
    ds = pydicom.dcmread(path)
    expected = np.rint(apply_color_lut(ds.pixel_array, ds) / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(video.frames[0], expected)
    assert video.meta.transfer_syntax in ("Implicit VR Little Endian", "Explicit VR Big Endian")


def test_big_endian_and_little_endian_palette_agree():
    little = read_video(_testdata("OBXXXX1A_2frame.dcm")).frames.astype(int)
    big = read_video(_testdata("OBXXXX1A_expb_2frame.dcm")).frames.astype(int)
    assert little.shape == big.shape == (2, 600, 800, 3)
    assert np.abs(little - big).max() <= 1  # the two files' 16-bit LUTs differ in the last bit


def test_big_endian_rgb_two_frames():
    video = read_video(_testdata("SC_rgb_expb_2frame.dcm"))
    assert video.frames.shape == (2, 100, 100, 3)
    np.testing.assert_array_equal(video.frames[0, 5, 50], [255, 0, 0])  # SC_rgb: red band on top
    np.testing.assert_array_equal(video.frames[1, 5, 50], [0, 255, 255])  # second frame is the inverse


def test_jpeg2000_lossless_ybr_rct_equals_uncompressed_rgb():
    j2k = read_video(_testdata("US1_J2KR.dcm"))
    raw = read_video(_testdata("US1_UNCR.dcm"))
    assert j2k.frames.shape == (1, 480, 640, 3)
    np.testing.assert_array_equal(j2k.frames, raw.frames)
    assert j2k.meta.transfer_syntax == "JPEG 2000 Image Compression (Lossless Only)"


def test_jpeg_lossless_monochrome2_8bit_is_replicated_grey():
    path = _testdata("JPGLosslessP14SV1_1s_1f_8b.dcm")
    video = read_video(path)
    assert video.frames.shape == (1, 768, 1024, 3)
    np.testing.assert_array_equal(video.frames[0, ..., 0], _raw(path))
    np.testing.assert_array_equal(video.frames[..., 0], video.frames[..., 2])
    assert video.frames[0, 400, 500, 1] == 32 and video.meta.intensity_mapping == "none"


def test_monochrome1_window_then_inverted():
    path = _testdata("RG3_UNCR.dcm")  # 10-bit CR, WindowCenter 550 / WindowWidth 1024
    video = read_video(path)
    stored = pydicom.dcmread(path).pixel_array.astype(float)
    linear = np.clip((stored - 549.5) / 1023.0 + 0.5, 0, 1)
    expected = 255 - np.rint(linear * 255).astype(np.uint8)
    np.testing.assert_array_equal(video.frames[0, ..., 0], expected)
    assert video.meta.intensity_mapping == "window"
    assert video.frames[0, 880, 880, 0] == 255 - round(((306 - 549.5) / 1023 + 0.5) * 255)


def test_16bit_big_endian_window_mr():
    video = read_video(_testdata("MR_small_bigendian.dcm"))
    ds = pydicom.dcmread(_testdata("MR_small_bigendian.dcm"))
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = np.rint(np.clip((ds.pixel_array - (c - 0.5)) / (w - 1) + 0.5, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(video.frames[0, ..., 1], expected)


def test_16bit_without_window_is_minmax_over_whole_loop():
    path = _testdata("emri_small_RLE.dcm")  # 10 frames, 12-bit, no window
    video = read_video(path)
    stored = pydicom.dcmread(path).pixel_array.astype(float)
    expected = np.rint((stored - stored.min()) / (stored.max() - stored.min()) * 255).astype(np.uint8)
    np.testing.assert_array_equal(video.frames[..., 0], expected)
    assert video.frames.shape == (10, 64, 64, 3) and video.meta.intensity_mapping == "minmax"


def test_16bit_rgb_is_scaled_to_8bit():
    video = read_video(_testdata("SC_rgb_16bit_2frame.dcm"))
    np.testing.assert_array_equal(video.frames[0, 5, 50], [255, 0, 0])
    assert video.meta.bits_stored == 16 and video.meta.intensity_mapping == "rescale"


def test_uncompressed_ybr_full_is_converted_once():
    path = _testdata("SC_ybr_full_uncompressed.dcm")
    ybr = read_video(path).frames
    np.testing.assert_array_equal(ybr[0], convert_color_space(_raw(path), "YBR_FULL", "RGB"))
    rgb = read_video(_testdata("SC_rgb.dcm")).frames  # the same test card stored as RGB
    assert np.abs(ybr.astype(int) - rgb).max() <= 6 and np.abs(ybr.astype(int) - rgb).mean() < 1


def test_deid_greyscale_cine_metadata_and_privacy(greyscale_cine):
    video = read_video(greyscale_cine)
    assert video.frames.shape == (27, 600, 800, 3)
    np.testing.assert_array_equal(video.frames[..., 0], _raw(greyscale_cine))
    meta = video.meta
    assert (meta.manufacturer, meta.manufacturer_model_name, meta.modality) == ("Philips Medical Systems", "EPIQ 5G", "US")
    assert meta.frame_time_ms == pytest.approx(33.333)
    (region,) = meta.ultrasound_regions
    assert (region.x0, region.y0, region.x1, region.y1) == (10, 31, 788, 592)
    assert meta.pixel_spacing_mm == pytest.approx((0.0830780, 0.0830780))
    text = repr(meta.to_dict())
    for secret in ("ZZZ", "PATIENTFIVE", "10101010101", "19510829", "1951", "104111149", "20170302", "CLEVELAND"):
        assert secret not in text
    assert read_frame_count(greyscale_cine) == 27
    assert content_hash(greyscale_cine) == hashlib.sha256(greyscale_cine.read_bytes()).hexdigest()


def test_deid_rgb_image_single_frame():
    path = _deid("RGB_IMAGE.dcm")
    video = read_video(path)
    assert video.frames.shape == (1, 768, 1024, 3)
    np.testing.assert_array_equal(video.frames[0], pydicom.dcmread(path).pixel_array)
    assert video.meta.pixel_spacing_mm == pytest.approx((0.237872, 0.237872))
    assert video.meta.fps is None and video.meta.manufacturer == "SIEMENS"


def test_dicom_without_extension_is_sniffed(tmp_path):
    target = tmp_path / "1.2.840.113619.2.55"
    target.write_bytes(_testdata("US1_UNCR.dcm").read_bytes())
    assert read_video(target).frames.shape == (1, 480, 640, 3)


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_uncompressed_dicom_raises_input_file_error(tmp_path, keep):
    source = _testdata("US1_UNCR.dcm").read_bytes()
    target = tmp_path / "cut.dcm"
    target.write_bytes(source[: int(len(source) * keep)])
    with pytest.raises(InputFileError, match="cut.dcm") as info:
        read_video(target)
    assert "re-export" in str(info.value)


def test_truncated_jpeg_multiframe_raises_input_file_error(tmp_path):
    source = _testdata("examples_ybr_color.dcm").read_bytes()
    target = tmp_path / "cut_jpeg.dcm"
    target.write_bytes(source[: int(len(source) * 0.6)])
    with pytest.raises(InputFileError, match="cut_jpeg.dcm") as info:
        read_video(target)
    assert "truncated" in str(info.value) and "re-export" in str(info.value)


def test_header_only_fragment_and_garbage_raise(tmp_path):
    fragment = tmp_path / "fragment.dcm"
    fragment.write_bytes(_testdata("US1_UNCR.dcm").read_bytes()[:200])
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"this is not a dicom file at all" * 10)
    for path in (fragment, garbage):
        with pytest.raises(InputFileError, match=path.name):
            read_video(path)


def test_dicom_without_pixel_data_raises(tmp_path):
    ds = pydicom.dcmread(_testdata("US1_UNCR.dcm"))
    del ds.PixelData
    target = tmp_path / "no_pixels.dcm"
    ds.save_as(target)
    with pytest.raises(InputFileError, match="no pixel data"):
        read_video(target)
