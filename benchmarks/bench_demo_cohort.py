"""How long the built-in demo cohort takes: rendering alone, and the whole cohort written to disk."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from alnvid.data.demo import make_demo_cohort, render_demo_videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    start = time.process_time()
    for _ in render_demo_videos(args.patients, args.frames):
        pass
    render = time.process_time() - start
    with tempfile.TemporaryDirectory() as folder:
        start, wall = time.process_time(), time.perf_counter()
        manifest = make_demo_cohort(Path(folder), args.patients, args.frames)
        total, wall = time.process_time() - start, time.perf_counter() - wall
        size = sum(p.stat().st_size for p in manifest.parent.rglob("*") if p.is_file()) / 2**20
    frames = args.patients * args.frames
    print(f"demo cohort {args.patients} patients x {args.frames} frames (320x400): render {render:.2f} s CPU, "
          f"render+JPEG+DICOM+PNG {total:.2f} s CPU ({wall:.2f} s wall), {1000 * total / frames:.2f} ms/frame, "
          f"{size:.0f} MiB on disk")


if __name__ == "__main__":
    main()
