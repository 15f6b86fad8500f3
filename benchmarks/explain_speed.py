"""Seconds `explain_file` takes on one file, single-clip and multi-clip, with and without GIF/MP4.

Usage: python benchmarks/explain_speed.py [CHECKPOINT FILE] [--device cuda]
Without arguments it uses the TIN model and a test DICOM of `make demo` (runs/demo).
The first call includes decoding into the preprocessing cache and warm-up; later calls are warm.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from alnvid.explain import explain_file
from alnvid.models.trained import load_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("file", nargs="?")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.checkpoint is None:
        args.checkpoint, args.file = _demo_inputs()
        if args.checkpoint is None:
            print("no checkpoint given and no runs/demo found: run `make demo` first, or give CHECKPOINT FILE")
            return
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


def _demo_inputs() -> tuple[str | None, str | None]:
    """The best TIN fold of `make demo` and its first positive test video."""
    import json
    from pathlib import Path

    from alnvid.protocol import first_test_video

    demo = Path("runs/demo")
    summary = demo / "runs" / "tin-cv" / "cv_summary.json"
    if not summary.is_file():
        return None, None
    best = json.loads(summary.read_text())["best_checkpoint"]
    return str(demo / "runs" / "tin-cv" / best), str(first_test_video(demo / "cohort" / "manifest.csv"))


if __name__ == "__main__":
    main()
