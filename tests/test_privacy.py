"""Privacy by construction: `predict` never derives an identifier from a file name, and text burned into the
imaging region (annotations typed on screen) is blanked while the tissue around it is kept.

Text boxes were measured on the files' first frames (viewed as PNGs): RGB_CINE (Terason) has the comment
"rt hip inj Right Supraspinatus Transverse" on rows 623-642, columns 173-532, inside its imaging region;
GREYSCALE_CINE (Philips EPIQ) has settings text ("L12-5", "36Hz", "Dyn R 58", ...) in columns 11-74 from row 36
down to row 200, inside the scanner-declared region (10, 31)-(788, 592).
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from alnvid.cli.main import app
from alnvid.data.cache import preprocess_video
from alnvid.data.crop import imaging_region, mask_static_overlays
from alnvid.io import content_hash, read_video



def _deid(name: str) -> Path:
    deid_data = pytest.importorskip("deid_data", reason="deid-data not installed: `pip install -e .[test]`")
    return Path(deid_data.__file__).parent / "data" / "ultrasounds" / name


@pytest.fixture(scope="module")
def deid_cines(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deid")
    videos = {}
    for name in ("RGB_CINE", "GREYSCALE_CINE"):
        with zipfile.ZipFile(_deid(f"{name}.zip")) as zf:
            zf.extract(f"{name}.dcm", folder)
        videos[name] = read_video(folder / f"{name}.dcm")
    return videos


@pytest.mark.parametrize("name, text, tissue", [
    ("RGB_CINE", (slice(623, 643), slice(173, 533)), (slice(100, 620), slice(160, 700))),
    ("GREYSCALE_CINE", (slice(36, 200), slice(11, 75)), (slice(140, 540), slice(110, 690))),
])
def test_on_screen_text_in_the_imaging_region_is_blanked_and_tissue_kept(deid_cines, name, text, tissue):
    video = deid_cines[name]
    box = imaging_region(video)
    assert box.x0 <= text[1].start and box.y0 <= text[0].start  # the text is inside the region the model sees
    masked = mask_static_overlays(video.frames, box)
    before, after = video.frames[:, text[0], text[1]].max(axis=-1), masked[:, text[0], text[1]].max(axis=-1)
    background = np.median(before)
    assert (before >= 200).sum(axis=(1, 2)).min() > 300  # readable white text in every frame
    # every glyph pixel, its grey anti-aliased edge included, is gone: nothing stands out from the background
    assert (before > background + 15).mean() > 0.1  # a tenth of the box is text ...
    assert after.max() <= background + 30 and (after > background + 15).mean() < 0.005  # ... and now almost none
    np.testing.assert_array_equal(masked[:, tissue[0], tissue[1]], video.frames[:, tissue[0], tissue[1]])


def _stamp(frames: np.ndarray, text: str, xy: tuple[int, int]) -> np.ndarray:
    """Frames with `text` typed on screen at `xy` (white, anti-aliased), each frame then JPEG-compressed as the
    demo's scanner stores it, so the text jitters slightly from frame to frame."""
    font = ImageFont.load_default(size=11)
    out = []
    for frame in frames:
        image = Image.fromarray(frame)
        ImageDraw.Draw(image).text(xy, text, fill=(235, 235, 235), font=font)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return np.stack(out)


def test_the_demo_identity_typed_inside_the_image_is_blanked(tmp_path):
    """The demo writes a fake identity into each file's banner (outside the imaging region, so cropped away);
    typed inside the image, as a sonographer's annotation, it is blanked, and the tissue elsewhere is kept."""
    from alnvid.data.demo import make_demo_cohort

    manifest = make_demo_cohort(tmp_path, patients=6, frames=8, seed=1, frame_size=(192, 256))
    table = pd.read_csv(manifest)
    truth = pd.read_csv(tmp_path / "demo_truth.csv")
    for path, region in zip(table["path"], truth["region_box"]):  # both scanners, with and without DICOM regions
        video = read_video(tmp_path / path)
        top = int(region.split(",")[1])
        assert (video.frames[0, :top].max(axis=-1) >= 200).sum() > 20  # the banner text, above the image
        for box in (imaging_region(video), imaging_region(video, use_dicom_regions=False)):
            # ... is cropped away: no text pixel in the crop. The motion crop may start up to one JPEG block (8 px)
            # above the image, whose first rows make the whole block flicker, but not into the text.
            assert box.y0 >= top - 8
            assert (video.frames[0, box.y0:top, box.x0:box.x1].max(axis=-1) >= 200).sum() == 0
    video = read_video(tmp_path / table.loc[table["site"] == "hospital_A", "path"].iloc[0])  # darker than B's gain
    box = imaging_region(video)
    name = "DEMO PATIENT 1"
    x, y = box.x0 + 10, box.y0 + box.height // 2
    stamped = _stamp(video.frames, name, (x, y))
    glyphs = (stamped.max(axis=-1).astype(int) - video.frames.max(axis=-1)) > 60  # the text's pixels
    assert glyphs.sum(axis=(1, 2)).min() > 80
    masked = mask_static_overlays(stamped, box)
    # each glyph pixel now shows about what the tissue behind it showed: no stroke stands out any more
    above = masked.max(axis=-1).astype(int) - video.frames.max(axis=-1)
    assert (above[glyphs] > 60).mean() < 0.02 and np.abs(above[glyphs]).mean() < 30
    away = (slice(y + 30, box.y1), slice(box.x0, box.x1))  # tissue below the text, untouched by it
    changed = (masked[:, away[0], away[1]] != stamped[:, away[0], away[1]]).any(axis=-1).mean()
    assert changed < 0.01


def test_preprocessed_video_carries_no_banner_and_blanks_in_image_text(deid_cines, tmp_path):
    """What the model (and every heatmap) sees: the cached, cropped frames."""
    video = deid_cines["RGB_CINE"]
    result = preprocess_video(_deid_file(tmp_path, "RGB_CINE"), 256)
    scale = 256 / result.box.height
    row0 = int((623 - result.box.y0) * scale)
    col0, col1 = int((173 - result.box.x0) * 256 / result.box.width), int((533 - result.box.x0) * 256 / result.box.width)
    assert result.frames[:, row0:, col0:col1].max() < 60 and video.frames[:, 623:643, 173:533].max() == 255


def _deid_file(tmp_path, name):
    with zipfile.ZipFile(_deid(f"{name}.zip")) as zf:
        zf.extract(f"{name}.dcm", tmp_path)
    return tmp_path / f"{name}.dcm"


def test_predict_outputs_never_carry_file_names(tiny_checkpoint, tiny_cohort, tmp_path):
    manifest = pd.read_csv(tiny_cohort)
    named = []
    for i, stem in enumerate(["Doe_Jane_19610302", "DEMO^PATIENT^3 MRN 0012345"]):
        named.append(tmp_path / "exports" / f"{stem}.dcm")
        named[-1].parent.mkdir(exist_ok=True)
        shutil.copy(tiny_cohort.parent / manifest["path"][i], named[-1])
    out = tmp_path / "predictions.csv"
    runner = CliRunner(env={"COLUMNS": "250"})
    shown = runner.invoke(app, ["predict", *map(str, named), "-c", str(tiny_checkpoint), "--out", str(out)])
    printed = runner.invoke(app, ["predict", *map(str, named), "-c", str(tiny_checkpoint), "--json"])
    assert shown.exit_code == printed.exit_code == 0, shown.output + printed.output
    ids = [f"file_{content_hash(p)[:8]}" for p in named]
    assert pd.read_csv(out)["patient_id"].tolist() == ids
    assert [r["patient_id"] for r in json.loads(printed.stdout)] == ids
    outputs = out.read_text() + printed.stdout + shown.stdout
    for path in named:
        for piece in (path.stem, *path.stem.replace("^", " ").replace("_", " ").split()):
            if len(piece) > 2:
                assert piece not in outputs, piece
