"""Container-video and still-image readers: the 100 real POCUS videos, Pillow images, broken files."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from alnvid.data.crop import crop, imaging_region
from alnvid.errors import InputFileError
from alnvid.io import read_frame_count, read_video

POCUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pocus"
_ROWS = list(csv.DictReader((POCUS / "manifest.csv").open())) if (POCUS / "manifest.csv").is_file() else []
needs_pocus = pytest.mark.skipif(not _ROWS, reason=f"real POCUS videos not found at {POCUS} (../shared absent)")


@pytest.fixture(scope="module")
def decode_times() -> dict[str, float]:
    return {}


@needs_pocus
@pytest.mark.parametrize("row", _ROWS, ids=[r["video_id"] for r in _ROWS])
def test_pocus_video_decodes_and_crops(row, decode_times):
    path = POCUS / row["file"]
    start = time.perf_counter()
    video = read_video(path)
    decode_times[row["video_id"]] = time.perf_counter() - start
    frames = video.frames
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3 and frames.shape[0] >= 2
    assert (video.meta.n_frames, video.meta.height, video.meta.width) == frames.shape[:3]
    assert video.meta.source == "video" and video.meta.fps is not None and 5 <= video.meta.fps <= 120
    assert frames.max() > 100  # real content, not a black decode
    box = imaging_region(video)
    height, width = frames.shape[1:3]
    assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height
    assert box.area > 0.25 * width * height
    assert crop(video, box).shape == (frames.shape[0], box.height, box.width, 3)


@needs_pocus
def test_pocus_frame_count_header_matches_decode():
    for name in ("Reg_pat1Image_132943.mpeg", "Pneu_northumbria_0409_set1_vid1.avi", "Cov-Atlas+(45).gif", "Reg-NormalLungs.mp4"):
        path = POCUS / "videos" / name
        assert read_frame_count(path) == read_video(path).n_frames


def test_png_is_exact_and_jpeg_close(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "still.png")
    video = read_video(tmp_path / "still.png")
    assert video.frames.shape == (1, 48, 64, 3) and video.meta.source == "image"
    np.testing.assert_array_equal(video.frames[0], rgb)
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))
    Image.fromarray(grey).save(tmp_path / "grey.jpg", quality=95)
    frames = read_video(tmp_path / "grey.jpg").frames
    np.testing.assert_array_equal(frames[..., 0], frames[..., 2])
    assert np.abs(frames[0, ..., 1].astype(int) - grey).max() <= 4


def test_16bit_png_minmax(tmp_path):
    values = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    frames = read_video(tmp_path / "deep.png").frames
    np.testing.assert_array_equal(frames[0, ..., 0], [[0, 64], [128, 255]])


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(InputFileError, match="file not found"):
        read_video(tmp_path / "absent.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputFileError, match="empty"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputFileError, match="unsupported file type .txt"):
        read_video(tmp_path / "notes.txt")
    with pytest.raises(InputFileError, match="folder"):
        read_video(tmp_path)


def test_truncated_image_raises(tmp_path):
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(InputFileError, match="cut.png"):
        read_video(tmp_path / "cut.png")


def test_audio_only_container_raises(tmp_path):
    target = tmp_path / "voice_note.mp4"
    with av.open(str(target), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(InputFileError, match="no video stream"):
        read_video(target)


@needs_pocus
def test_truncated_real_videos_raise(tmp_path):
    for name in ("Reg-NormalLungs.mp4", "Cov_denault_proposedUS_vid1.mov"):
        data = (POCUS / "videos" / name).read_bytes()
        target = tmp_path / name
        target.write_bytes(data[:2048])
        with pytest.raises(InputFileError, match=name):
            read_video(target)
