"""Decode, crop and resize each video once; later epochs read uint8 frames from a memory-mapped `.npy` file.

Entries are keyed by the file's content hash and the preprocessing parameters, so renaming a file keeps its
entry and changing the crop or size makes a new one. Writes are atomic (temporary file + rename): two
processes filling the cache at once both succeed and leave one complete entry.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from alnvid.data.crop import Box, imaging_region, mask_static_overlays
from alnvid.io import check_modality, content_hash, read_video
from alnvid.utils import atomic_path, atomic_write_text

CACHE_FORMAT = 2
"""Bump when preprocessing changes meaning, so old entries are not reused."""
PARALLEL_FILL_MIN = 32
"""Fewer files than this to decode are decoded in this process: starting worker processes would cost more."""


@dataclass(frozen=True)
class Preprocessed:
    """A video ready for sampling: `frames` is (F, size, size, 3) uint8, often a read-only memory map.

    `modality` is the DICOM Modality (None for videos and images); `distinct` how many frames differ from each
    other (None: not counted yet), since a "loop" of one repeated frame holds no motion for a video model.
    """

    frames: np.ndarray
    box: Box
    source_height: int
    source_width: int
    frame_time_ms: float | None
    modality: str | None = None
    distinct: int | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def distinct_frames(self) -> int:
        return self.distinct if self.distinct is not None else count_distinct_frames(self.frames)


def count_distinct_frames(frames: np.ndarray) -> int:
    """How many of the frames are pixel-for-pixel different from each other."""
    return len({hashlib.sha1(np.ascontiguousarray(frame).data).digest() for frame in frames})


def preprocess_video(
    path: str | Path, size: int, *, box: Box | None = None, mask_overlays: bool = True,
    allow_modalities: Collection[str] = (),
) -> Preprocessed:
    """Read a file, crop it to the imaging region (detected unless `box` is given) and resize to size×size.

    A DICOM of another modality than ultrasound is refused unless its modality is in `allow_modalities`.
    """
    video = read_video(path)
    check_modality(video.meta.modality, path, allow_modalities)
    region = (box or imaging_region(video)).clip(video.meta.width, video.meta.height)
    frames = video.frames
    if mask_overlays:
        frames = mask_static_overlays(frames, region)
    cropped = frames[:, region.y0 : region.y1, region.x0 : region.x1]
    resized = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in cropped])
    return Preprocessed(resized, region, video.meta.height, video.meta.width, video.meta.frame_time_ms,
                        video.meta.modality, count_distinct_frames(resized))


class PreprocessCache:
    """Content-addressed store of preprocessed videos under `root`.

    Every load, cached or not, refuses DICOMs that are not ultrasound unless their modality is allowed.
    """

    def __init__(self, root: str | Path, size: int = 256, *, mask_overlays: bool = True,
                 allow_modalities: Collection[str] = ()):
        self.root = Path(root)
        self.size = size
        self.mask_overlays = mask_overlays
        self.allow_modalities = tuple(allow_modalities)
        self.decoded = 0
        """How many files this process has decoded (a warm cache decodes none)."""
        self._hashes: dict[tuple[str, int, int], str] = {}

    @classmethod
    def from_config(cls, data) -> PreprocessCache:
        """The cache a run's data settings (alnvid.config.DataConfig) read and fill."""
        return cls(data.cache_dir, data.resize, mask_overlays=data.mask_overlays,
                   allow_modalities=data.allow_modalities)

    def load(self, path: str | Path, *, box: Box | None = None) -> Preprocessed:
        """The preprocessed video, from the cache when present, else decoded and stored."""
        entry = self._entry(Path(path), box)
        array_path, info_path = entry.with_suffix(".npy"), entry.with_suffix(".json")
        if info_path.is_file() and array_path.is_file():
            info = json.loads(info_path.read_text())
            check_modality(info["modality"], path, self.allow_modalities)
            frames = np.load(array_path, mmap_mode="r")
            return Preprocessed(frames, Box(**info["box"]), info["source_height"], info["source_width"],
                                info["frame_time_ms"], info["modality"], info["distinct_frames"])
        result = preprocess_video(path, self.size, box=box, mask_overlays=self.mask_overlays,
                                  allow_modalities=self.allow_modalities)
        self.decoded += 1
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(array_path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(result.frames))
        info = {"box": asdict(result.box), "source_height": result.source_height,
                "source_width": result.source_width, "frame_time_ms": result.frame_time_ms,
                "modality": result.modality, "distinct_frames": result.distinct}
        atomic_write_text(info_path, json.dumps(info))
        return result

    def is_cached(self, path: str | Path, *, box: Box | None = None) -> bool:
        entry = self._entry(Path(path), box)
        return entry.with_suffix(".json").is_file() and entry.with_suffix(".npy").is_file()

    def fill(self, files: Sequence[tuple[str | Path, Box | None]], *, workers: int = 1,
             progress: Callable[[int, int, str], None] | None = None) -> None:
        """Load every (file, box), decoding the ones not cached yet, `workers` processes at a time on Linux when
        there are at least `PARALLEL_FILL_MIN` of them (the atomic writes make that safe).

        A file that fails in a worker is decoded again in this process, so a bad file raises the same error, in
        the same (manifest) order, as a fill in one process would.
        """
        can_fork = workers > 1 and sys.platform == "linux"
        missing = [(file, box) for file, box in files if not self.is_cached(file, box=box)] if can_fork else []
        parallel = len(missing) >= PARALLEL_FILL_MIN
        if parallel:
            # Forked, as PyTorch's DataLoader workers are on Linux: spawned workers would re-run a caller's script
            # that lacks an `if __name__ == "__main__"` guard. The workers touch neither torch nor CUDA.
            # Python 3.12+ warns at each fork of a process that has threads (torch's pool). The decoders are forked
            # as DataLoader's workers are, so the warning, once per worker, is silenced here.
            context = multiprocessing.get_context("fork")
            with warnings.catch_warnings(), ProcessPoolExecutor(min(workers, len(missing)), mp_context=context) as pool:
                warnings.filterwarnings("ignore", message=r".*multi-threaded, use of fork\(\) may lead to deadlocks",
                                        category=DeprecationWarning)
                jobs = {pool.submit(_decode_into, self, file, box): file for file, box in missing}
                for done, job in enumerate(as_completed(jobs), start=1):
                    self.decoded += job.result()
                    if progress:
                        progress(done, len(missing), Path(jobs[job]).name)
        for done, (file, box) in enumerate(files, start=1):
            self.load(file, box=box)
            if progress and not parallel:
                progress(done, len(files), Path(file).name)

    def _entry(self, path: Path, box: Box | None) -> Path:
        stat = path.stat() if path.exists() else None
        memo_key = (str(path), stat.st_size, stat.st_mtime_ns) if stat else None
        digest = self._hashes.get(memo_key) if memo_key else None
        if digest is None:
            digest = content_hash(path)
            if memo_key:
                self._hashes[memo_key] = digest
        params = f"{CACHE_FORMAT}|{self.size}|{self.mask_overlays}|{box}"
        key = hashlib.sha256(f"{digest}|{params}".encode()).hexdigest()[:32]
        return self.root / key[:2] / key


def _decode_into(cache: PreprocessCache, file: str | Path, box: Box | None) -> bool:
    """One worker's job in `PreprocessCache.fill`: whether it decoded `file` into the cache (errors are left to the
    parent, which decodes a failed file again and raises)."""
    try:
        cache.load(file, box=box)
    except Exception:
        return False
    return True


def default_cache_dir() -> Path:
    """`$ALNVID_CACHE` if set, else `.alnvid-cache` in the working directory."""
    return Path(os.environ.get("ALNVID_CACHE", ".alnvid-cache"))
