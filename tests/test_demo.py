"""The synthetic demo cohort: valid scanner-like DICOM, a sound manifest, ground truth, determinism, no leaks."""
from __future__ import annotations

import csv
import inspect
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import JPEGBaseline8Bit, UltrasoundMultiFrameImageStorage

from alnvid.data.demo import (
    MANIFEST_COLUMNS,
    NODE_WINDOW,
    TEST_SHARE,
    TRUTH_COLUMNS,
    make_demo_cohort,
    render_demo_videos,
)
from alnvid.errors import AlnvidError

PATIENTS, FRAMES, SEED, SIZE = 8, 8, 3, (128, 160)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return make_demo_cohort(tmp_path_factory.mktemp("demo"), PATIENTS, FRAMES, SEED, frame_size=SIZE)


@pytest.fixture(scope="module")
def rendered() -> dict:
    return {v.case.patient_id: v for v in render_demo_videos(PATIENTS, FRAMES, SEED, frame_size=SIZE)}


@pytest.fixture(scope="module")
def manifest(cohort) -> list[dict[str, str]]:
    return _read_csv(cohort)


@pytest.fixture(scope="module")
def truth(cohort) -> dict[str, dict[str, str]]:
    return {row["patient_id"]: row for row in _read_csv(cohort.parent / "demo_truth.csv")}


def _box(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def test_files_are_scanner_like_dicom(cohort, manifest, truth):
    for row in manifest:
        path = cohort.parent / row["path"]
        assert path.read_bytes()[128:132] == b"DICM"
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == UltrasoundMultiFrameImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PhotometricInterpretation == "YBR_FULL_422"
        assert (ds.SamplesPerPixel, ds.PlanarConfiguration, ds.BitsAllocated) == (3, 0, 8)
        assert (int(ds.NumberOfFrames), ds.Rows, ds.Columns) == (FRAMES, *SIZE)
        assert float(ds.FrameTime) == pytest.approx(1000 / ds.CineRate, abs=0.1)
        scanner = "A" if row["site"] == "hospital_A" else "B"
        assert ds.ManufacturerModelName == f"alnvid demo scanner {scanner}"
        assert str(ds.PatientName).startswith("DEMO^PATIENT^") and ds.PatientID.startswith("DEMO")
        assert ds.PatientID != row["patient_id"]
        if scanner == "A":
            region = ds.SequenceOfUltrasoundRegions[0]
            box = (region.RegionLocationMinX0, region.RegionLocationMinY0,
                   region.RegionLocationMaxX1 + 1, region.RegionLocationMaxY1 + 1)
            assert box == _box(truth[row["patient_id"]]["region_box"])
            assert region.PhysicalDeltaY * (box[3] - box[1]) == pytest.approx(4.0)  # 4 cm depth
        else:
            assert "SequenceOfUltrasoundRegions" not in ds  # the crop has to find the image itself
        # Every frame is a baseline JPEG (SOF0) with 4:2:2 chroma: luma sampled 2x1, chroma 1x1.
        fragments = list(generate_frames(ds.PixelData, number_of_frames=FRAMES))
        assert len(fragments) == FRAMES
        for jpeg in fragments:
            assert jpeg[:2] == b"\xff\xd8"
            sof = jpeg.index(b"\xff\xc0")
            assert jpeg[sof + 9] == 3  # components
            assert [jpeg[sof + 11 + 3 * c] for c in range(3)] == [0x21, 0x11, 0x11]


def test_decoded_frames_match_rendered_ones(cohort, manifest, rendered):
    for row in manifest:
        pixels = pydicom.dcmread(cohort.parent / row["path"]).pixel_array
        assert pixels.shape == (FRAMES, *SIZE, 3) and pixels.dtype == np.uint8
        error = np.abs(pixels.astype(int) - rendered[row["patient_id"]].frames).mean()
        assert 0 < error < 6  # lossy, but only by JPEG's error


def test_still_is_the_keyframe_of_the_video(cohort, manifest, truth):
    with_still = [row for row in manifest if row["still_path"]]
    assert len(with_still) == PATIENTS - PATIENTS // 3
    for row in with_still:
        still = np.asarray(Image.open(cohort.parent / row["still_path"]))
        video = pydicom.dcmread(cohort.parent / row["path"]).pixel_array
        keyframe = int(truth[row["patient_id"]]["keyframe"])
        assert still.shape == (*SIZE, 3)
        assert np.abs(still.astype(int) - video[keyframe]).mean() < 1.0


def test_manifest_columns_splits_and_readers(manifest):
    assert list(manifest[0]) == list(MANIFEST_COLUMNS)
    ids = [row["patient_id"] for row in manifest]
    assert len(set(ids)) == PATIENTS and ids[0] == "P001"
    for split, site in (("train", "hospital_A"), ("test_a", "hospital_A"), ("test_b", "hospital_B")):
        rows = [row for row in manifest if row["split"] == split]
        assert {row["label"] for row in rows} == {"0", "1"}, split
        assert {row["site"] for row in rows} == {site}
    for row in manifest:
        assert row["birads"] in {"4a", "4b", "4c", "5"} and 6 <= float(row["tumour_size_mm"]) <= 35
        for reader in ("junior", "senior", "expert"):
            call, score = row[f"reader_{reader}"], row[f"reader_{reader}_score"]
            if row["split"] != "test_b":
                assert call == score == ""
            else:
                assert 1 <= int(score) <= 5 and int(call) == int(int(score) >= 3)


def test_reader_accuracies_and_label_balance_are_realistic():
    from alnvid.data.demo import plan_demo_cases

    cases = plan_demo_cases(3000, seed=0)
    assert np.mean([c.label for c in cases]) == pytest.approx(0.4, abs=0.02)
    test_b = [c for c in cases if c.split == "test_b"]
    for name, accuracy in (("junior", 0.70), ("senior", 0.78), ("expert", 0.85)):
        observed = np.mean([c.readers[name][0] == c.label for c in test_b])
        assert observed == pytest.approx(accuracy, abs=0.04), name
    sizes = np.array([c.tumour_size_mm for c in cases])
    labels = np.array([c.label for c in cases])
    assert 0.1 < np.corrcoef(sizes, labels)[0, 1] < 0.6  # weakly informative


@pytest.mark.parametrize("patients, share, sizes", [(120, 0.15, (84, 18, 18)), (168, 0.25, (84, 42, 42))])
def test_test_share_sets_the_split_sizes_and_keeps_both_classes(patients, share, sizes):
    from alnvid.data.demo import plan_demo_cases

    cases = plan_demo_cases(patients, seed=3, test_share=share)
    for split, size in zip(("train", "test_a", "test_b"), sizes):
        labels = [c.label for c in cases if c.split == split]
        assert len(labels) == size and sum(labels) == round(0.4 * size)
    assert {c.scanner.site for c in cases if c.split == "test_b"} == {"hospital_B"}


def test_truth_locates_the_node_in_part_of_the_sweep(truth, rendered):
    assert list(next(iter(truth.values()))) == list(TRUTH_COLUMNS)
    for patient, row in truth.items():
        assert row["node_kind"] == ("metastatic" if row["label"] == "1" else row["node_kind"])
        if row["node_kind"] == "none":
            assert row["node_first_frame"] == row["node_box"] == ""
            continue
        assert row["node_kind"] in {"metastatic", "normal"}
        first, last = int(row["node_first_frame"]), int(row["node_last_frame"])
        low, high = NODE_WINDOW
        assert 0 <= first < last < FRAMES and max(2, round(low * FRAMES)) <= last - first + 1 <= round(high * FRAMES)
        x0, y0, x1, y1 = _box(row["node_box"])
        rx0, ry0, rx1, ry1 = _box(row["region_box"])
        assert rx0 <= x0 < x1 <= rx1 and ry0 <= y0 < y1 <= ry1
        if row["node_kind"] == "metastatic":  # hypoechoic: the box centre is darker while the node is there
            frames = rendered[patient].frames[..., 0].astype(float)
            cy, cx, hy, hx = (y0 + y1) // 2, (x0 + x1) // 2, max(1, (y1 - y0) // 6), max(1, (x1 - x0) // 6)
            centre = frames[:, cy - hy:cy + hy + 1, cx - hx:cx + hx + 1].mean(axis=(1, 2))
            middle = (first + last) // 2
            assert centre[middle] < np.delete(centre, range(first, last + 1)).mean() - 10


def test_screen_around_the_image_is_static_and_carries_the_banner(rendered, truth):
    for patient, video in rendered.items():
        x0, y0, x1, y1 = _box(truth[patient]["region_box"])
        outside = np.ones(SIZE, bool)
        outside[y0:y1, x0:x1] = False
        frames = video.frames
        assert (frames[:, outside] == frames[:1, outside]).all()
        assert (frames[:, y0:y1, x0:x1] != frames[:1, y0:y1, x0:x1]).any(axis=(1, 2, 3))[1:].all()
        assert frames[0, :y0].max() > 200  # burned-in text in the banner


def test_same_seed_same_files_other_seed_other_pixels(cohort, tmp_path):
    again = make_demo_cohort(tmp_path / "again", PATIENTS, FRAMES, SEED, frame_size=SIZE)
    assert again.read_text() == cohort.read_text()
    first = cohort.parent / "videos" / "P001.dcm"
    assert (again.parent / "videos" / "P001.dcm").read_bytes() == first.read_bytes()
    other = make_demo_cohort(tmp_path / "other", 6, FRAMES, SEED + 1, frame_size=SIZE)
    assert pydicom.dcmread(other.parent / "videos" / "P001.dcm").PixelData != pydicom.dcmread(first).PixelData


def test_no_identity_in_manifest_truth_or_file_names(cohort):
    identities = ["DEMO^PATIENT", "DEMO0", "ACC", "HOSPITAL A", "HOSPITAL B"]
    for path in [cohort, cohort.parent / "demo_truth.csv", *cohort.parent.rglob("*")]:
        texts = [path.name.upper()] + ([path.read_text().upper()] if path.suffix == ".csv" else [])
        assert not any(identity in text for identity in identities for text in texts), path


@pytest.mark.parametrize("kwargs, message", [
    ({"patients": 5}, "at least 6 patients"),
    ({"frames": 4}, "at least 8 frames"),
    ({"frame_size": (64, 64)}, "at least 96x128"),
    ({"test_share": 0.5}, "test share of 0.5"),
    ({"patients": 7, "test_share": 0.45}, "leaves 1 of 7 patients for training"),
])
def test_bad_arguments_raise_user_errors(tmp_path, kwargs, message):
    with pytest.raises(AlnvidError, match=message):
        make_demo_cohort(tmp_path, **{"patients": 6, "frames": 8, **kwargs})


def test_output_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "cohort"
    target.write_text("")
    with pytest.raises(AlnvidError, match="not a folder") as error:
        make_demo_cohort(target, 6, 8)
    assert str(target) in str(error.value)


def test_cli_writes_the_cohort_and_summarises_it(tmp_path):
    import typer
    from typer.testing import CliRunner

    from alnvid.cli.demo_data import demo_data

    app = typer.Typer()
    app.command()(demo_data)
    result = CliRunner().invoke(app, [str(tmp_path / "c"), "--patients", "6", "--frames", "8",
                                      "--frame-size", "96", "128"])
    assert result.exit_code == 0, result.output
    assert "manifest.csv" in result.output and "6 patients" in result.output
    rows = _read_csv(tmp_path / "c" / "manifest.csv")
    assert len(rows) == 6 and pydicom.dcmread(tmp_path / "c" / rows[0]["path"]).Rows == 96
    failed = CliRunner().invoke(app, [str(tmp_path / "d"), "--patients", "2"])
    assert failed.exit_code == 2 and "at least 6 patients" in failed.output
    shared = CliRunner().invoke(app, [str(tmp_path / "e"), "--patients", "12", "--frames", "8", "--frame-size", "96",
                                      "128", "--test-share", "0.25"])
    assert shared.exit_code == 0 and "train 6, test_a 3, test_b 3" in shared.output, shared.output
    default = inspect.signature(demo_data).parameters["test_share"].default.default
    assert default == TEST_SHARE  # the CLI's default is the generator's
