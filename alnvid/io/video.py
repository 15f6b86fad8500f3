"""Container video reader (PyAV/FFmpeg): mp4, avi, mov, mpeg, gif and friends, decoded to RGB24."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from alnvid.errors import InputFileError
from alnvid.io.base import Video, VideoMeta

_FIX = "re-export or re-copy the video (it is probably truncated or corrupt), or convert it to mp4 with ffmpeg."


def read_container_video(path: Path) -> Video:
    """Decode every frame of the first video stream as uint8 RGB."""
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
            rate = stream.average_rate or stream.guessed_rate
            codec = stream.codec_context.name
    except av.error.FFmpegError as exc:
        raise InputFileError(f"video could not be decoded ({exc})", path=path, fix=_FIX) from exc
    if not frames:
        raise InputFileError("video decodes to zero frames", path=path, fix=_FIX)
    try:
        stacked = np.stack(frames)
    except ValueError as exc:
        raise InputFileError("frame size changes within the video", path=path,
                             fix="re-encode it at one size, e.g. `ffmpeg -i in -vf scale=W:H out.mp4`.") from exc
    frame_time = 1000.0 / float(rate) if rate else None
    meta = VideoMeta(
        source="video",
        n_frames=stacked.shape[0],
        height=stacked.shape[1],
        width=stacked.shape[2],
        frame_time_ms=frame_time,
        fps=float(rate) if rate else None,
        codec=codec,
    )
    return Video(frames=stacked, meta=meta)


def container_frame_count(path: Path) -> int:
    """Frame count from the container header, else by counting packets (no decoding)."""
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            if stream.frames:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as exc:
        raise InputFileError(f"video could not be opened ({exc})", path=path, fix=_FIX) from exc


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise InputFileError("file has no video stream", path=path, fix="point to a video file (mp4, avi, mov, mpeg, gif).")
    return container.streams.video[0]
