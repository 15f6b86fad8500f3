"""Seconds `explain_file` takes on one file, single-clip and multi-clip, with and without GIF/MP4.

Usage: python benchmarks/explain_speed.py CHECKPOINT FILE [--device cuda]
e.g. after `alnvid demo-data demo && alnvid fit --data demo/manifest.csv --model tin --fast --out runs/tin`.
The first call includes decoding into the preprocessing cache and warm-up; later calls are warm.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from alnvid.explain import explain_file
from alnvid.inference import load_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("file")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    start = time.perf_counter()
    model = load_trained(args.checkpoint, device=args.device)
    print(f"load checkpoint: {time.perf_counter() - start:.2f} s  ({model.spec.name}, T={model.config.data.frames}, "
          f"{model.input_size} px, {args.device})")
    settings = [("first call (cold cache, warm-up)", {}), ("single clip, PNGs only", {"gif": False, "mp4": False}),
                ("single clip, PNG + GIF + MP4", {}), ("multi-clip, PNGs only", {"multi_clip": True, "gif": False,
                                                                                 "mp4": False})]
    with tempfile.TemporaryDirectory() as out:
        for label, options in settings:
            start = time.perf_counter()
            result = explain_file(model, args.file, out, **options)
            print(f"{label:36s} {time.perf_counter() - start:6.2f} s   P={result.prob:.3f} "
                  f"frames explained={len(result.cam.frame_indices)}")


if __name__ == "__main__":
    main()
