"""Imaging-region detection, cropping and overlay masking on real deid-data ultrasound exports.

Text locations were measured on the files' first frames (viewed as PNGs): GREYSCALE_CINE (Philips
EPIQ, 800x600) has the patient banner on rows 6-15, settings text in columns 11-91 and a depth
ruler in columns 700-723; RGB_CINE (Terason, 1016x672) has a grey banner on rows 0-50, settings text
right of column 840 and a comment "rt hip inj ..." burned into the image on rows 623-642, columns 173-532.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from alnvid.data.crop import Box, crop, imaging_region, mask_static_overlays
from alnvid.errors import AlnvidError
from alnvid.io import read_video


def _deid(name: str) -> Path:
    deid_data = pytest.importorskip("deid_data", reason="deid-data not installed: `pip install -e .[test]`")
    return Path(deid_data.__file__).parent / "data" / "ultrasounds" / name


def _unzip(tmp_path_factory, name: str):
    folder = tmp_path_factory.mktemp(name)
    with zipfile.ZipFile(_deid(f"{name}.zip")) as zf:
        zf.extract(f"{name}.dcm", folder)
    return read_video(folder / f"{name}.dcm")


@pytest.fixture(scope="module")
def grey_cine(tmp_path_factory):
    return _unzip(tmp_path_factory, "GREYSCALE_CINE")


@pytest.fixture(scope="module")
def rgb_cine(tmp_path_factory):
    return _unzip(tmp_path_factory, "RGB_CINE")


def test_dicom_regions_give_the_box_and_exclude_the_banner(grey_cine):
    box = imaging_region(grey_cine)
    assert box == Box(10, 31, 789, 593)  # RegionLocation (10, 31)-(788, 592), inclusive max
    banner_rows = np.flatnonzero((grey_cine.frames[0, :18, :, 0] > 150).any(axis=1))
    assert banner_rows.min() == 6 and banner_rows.max() == 15 and box.y0 > banner_rows.max()


def test_motion_box_excludes_static_text_and_ruler(grey_cine):
    box = imaging_region(grey_cine, use_dicom_regions=False)
    assert box.y0 > 15 and box.x0 > 91 and box.x1 <= 704  # banner, settings column, depth ruler
    assert 540 <= box.y1 <= 560 and box.x0 <= 104 and box.x1 >= 695  # bottom and sides of the image


def test_motion_box_matches_scanner_region_on_rgb_cine(rgb_cine):
    declared = imaging_region(rgb_cine)
    assert declared == Box(153, 62, 710, 653)
    found = imaging_region(rgb_cine, use_dicom_regions=False)
    assert max(abs(a - b) for a, b in zip(
        (found.x0, found.y0, found.x1, found.y1), (declared.x0, declared.y0, declared.x1, declared.y1))) <= 10
    assert found.y0 > 50 and found.x1 < 840  # banner and right-hand settings text stay outside


def test_mask_static_overlays_removes_burned_in_comment_only(rgb_cine):
    box = imaging_region(rgb_cine)
    masked = mask_static_overlays(rgb_cine.frames, box)
    text_before = rgb_cine.frames[:, 623:643, 173:533].max(axis=-1) >= 200
    text_after = masked[:, 623:643, 173:533].max(axis=-1) >= 200
    assert text_before[0].sum() > 1000 and text_after.sum() == 0
    # Tissue below the skin line is untouched. (The saturated skin line on rows 62-100 of this
    # almost motionless loop is masked too: the documented limit of the rule.)
    tissue = slice(None), slice(100, 620), slice(160, 700)
    np.testing.assert_array_equal(masked[tissue], rgb_cine.frames[tissue])
    outside = masked[:, :, :box.x0]
    np.testing.assert_array_equal(outside, rgb_cine.frames[:, :, :box.x0])  # nothing changes outside the box


def test_mask_static_overlays_single_frame_is_unchanged():
    frames = np.full((1, 8, 8, 3), 255, np.uint8)
    out = mask_static_overlays(frames, Box(0, 0, 8, 8))
    np.testing.assert_array_equal(out, frames)
    assert out is not frames


def test_mask_static_overlays_synthetic_rule():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 120, size=(5, 20, 20, 3), dtype=np.uint8)
    frames[:, 5, 5] = 255  # static white caliper dot
    frames[:, 10, 10] = (0, 200, 255)  # static coloured marker
    frames[:, 15, 15] = 128  # static grey dot over 0-119 speckle: a glyph stroke
    frames[1::2, 3, 15] = 250  # a bright reflector that comes and goes: tissue
    out = mask_static_overlays(frames, Box(0, 0, 20, 20))
    for y, x in ((5, 5), (10, 10), (15, 15)):  # blanked to the mean of their surroundings
        surroundings = np.concatenate([frames[:, y - 2:y + 3, x - 2:x - 1], frames[:, y - 2:y + 3, x + 2:x + 3]], 2)
        assert np.abs(out[:, y, x].astype(float) - surroundings.mean(axis=(1, 2))).max() < 25, (y, x)
    np.testing.assert_array_equal(out[:, 3, 15], frames[:, 3, 15])


def test_single_frame_falls_back_to_regions_or_largest_bright_area():
    video = read_video(_deid("RGB_IMAGE.dcm"))
    assert imaging_region(video) == Box(0, 60, 1009, 765)
    frames = np.zeros((1, 100, 120, 3), np.uint8)
    frames[0, 20:80, 30:110] = 90  # image
    frames[0, 2:6, 2:40] = 255  # thin text line
    from alnvid.io import Video, VideoMeta

    static = Video(frames, VideoMeta(source="image", n_frames=1, height=100, width=120))
    box = imaging_region(static)
    assert abs(box.x0 - 30) <= 2 and abs(box.y0 - 20) <= 2 and abs(box.x1 - 110) <= 2 and abs(box.y1 - 80) <= 2


def test_crop_and_box_helpers(grey_cine):
    box = Box.from_string(" 100, 40 ,700,560")
    assert (box.width, box.height, box.area, str(box)) == (600, 520, 312000, "100,40,700,560")
    cropped = crop(grey_cine, box)
    assert cropped.shape == (27, 520, 600, 3)
    np.testing.assert_array_equal(cropped[3, 0, 0], grey_cine.frames[3, 40, 100])
    assert crop(grey_cine, Box(700, 500, 900, 700)).shape == (27, 100, 100, 3)  # clipped to the frame
    assert Box(5, 5, 2000, 2000).clip(800, 600) == Box(5, 5, 800, 600)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "10,10,5,20", "-1,0,5,5"])
def test_bad_box_strings_raise(text):
    with pytest.raises(AlnvidError, match="x0,y0,x1,y1"):
        Box.from_string(text)


def test_box_outside_frame_raises():
    with pytest.raises(AlnvidError, match="outside"):
        Box(900, 0, 1000, 10).clip(800, 600)
