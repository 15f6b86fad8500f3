"""Training clips/s from the cache: augmentation in the loader workers (albumentations, `--augment-on cpu`) against
uint8 frames augmented after the transfer (alnvid.data.gpu_augment, `--augment-on gpu`), on CUDA when present.

Each path runs the VideoDataModule's training loader as `fit` does (the study's augmentation with elastic on, T 16,
256 px cache, 224 px crop, batch 4, pinned memory on a GPU), moves every batch to the device and, for the torch path,
augments it there (the DataModule's `on_after_batch_transfer`); the device is synchronised before the clock stops.
The first batches (worker start-up and the prefetch queue's head start) are not timed. Goal (issue 10): >= 400 clips/s
with 16 cores at T 16, 224 px.

    python benchmarks/data_pipeline.py                         # a 40-patient demo cohort, 2 workers
    python benchmarks/data_pipeline.py --workers 8 16 --manifest M.csv --cache-dir .alnvid-cache
    python benchmarks/data_pipeline.py --tiny                  # seconds on a CPU: T 4, 32 px, exercises the code
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

GOAL = 400.0
"""Clips/s the training loader should deliver with 16 cores (twice the fastest model's consumption)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", help="cohort manifest (default: a demo cohort written to a temporary folder)")
    parser.add_argument("--cache-dir", help="preprocessing cache to read and fill (default: a temporary folder)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="DataLoader worker counts to time")
    parser.add_argument("--paths", nargs="+", choices=["cpu", "gpu", "frames"], default=["cpu", "gpu", "frames"],
                        help="cpu (albumentations in the workers), gpu (torch after transfer), frames (the gpu "
                             "path's loader alone, uint8 frames and parameters: the ceiling the workers set)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where batches go and the torch path runs (auto: cuda when present)")
    parser.add_argument("--batch-size", type=int, default=4, help="clips per batch (the study's 4)")
    parser.add_argument("--batches", type=int, help="timed batches per measurement (default 200 with CUDA, 25 "
                                                     "on a CPU, 20 at most with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny clips and cohort (T 4, 40 px cache, 32 px crop)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def _manifest(args: argparse.Namespace, workdir: Path) -> Path:
    if args.manifest:
        return Path(args.manifest)
    from alnvid.data.demo import make_demo_cohort

    if args.tiny:
        return make_demo_cohort(workdir / "demo", patients=12, frames=8, frame_size=(96, 128))
    return make_demo_cohort(workdir / "demo", patients=40, frames=32)


def measure(manifest, config, path: str, workers: int, device, args: argparse.Namespace) -> dict:
    """Clips/s of `path`'s training loader with `workers` processes, batches moved to (and augmented on) `device`."""
    import torch
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from alnvid.data.datamodule import VideoDataModule

    config = dataclasses.replace(config, augment_device="cpu" if path == "cpu" else "gpu", num_workers=workers)
    module = VideoDataModule(manifest, config, batch_size=args.batch_size)
    loader = module.train_dataloader()
    warmup = 2 + workers * (loader.prefetch_factor or 0)

    def batches():
        while True:
            yield from loader

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    clips, augment_s, start = 0, [], 0.0
    for i, batch in enumerate(batches()):
        if i == warmup:
            sync()
            clips, start = 0, time.perf_counter()
        if i == warmup + args.batches:
            break
        batch = move_data_to_device(batch, device)
        timed = path == "gpu" and (i - warmup) % 10 == 0  # the augmentation's own time, every tenth batch
        if timed:
            sync()
            before = time.perf_counter()
        if path != "frames":
            batch = module.on_after_batch_transfer(batch, 0)
            assert batch["x"].dtype == torch.float32 and batch["x"].shape[-1] == config.crop_size
        if timed:
            sync()
            augment_s.append(time.perf_counter() - before)
        clips += len(batch["label"])
    sync()
    elapsed = time.perf_counter() - start
    return {"path": path, "workers": workers, "device": str(device), "clips_per_s": clips / elapsed,
            "augment_ms_per_batch": 1000 * sum(augment_s) / len(augment_s) if augment_s else None}


def main(argv: list[str] | None = None) -> list[dict]:
    import torch

    from alnvid.config import DataConfig
    from alnvid.data.datamodule import VideoDataModule
    from alnvid.data.manifest import load_manifest

    args = parse_args(argv)
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    args.batches = args.batches or (200 if cuda else 25)
    if args.tiny:
        args.batches = min(args.batches, 20)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        manifest = load_manifest(_manifest(args, workdir))
        sizes = dict(frames=4, resize=40, crop_size=32) if args.tiny else {}  # else the study's T 16, 256 -> 224
        config = DataConfig(cache_dir=args.cache_dir or str(workdir / "cache"), elastic=True, input_size=None,
                            num_workers=0, **sizes)
        VideoDataModule(manifest, config).prepare_data()  # fill the cache first: only cache reads are timed
        results = [measure(manifest, config, path, workers, device, args)
                   for workers in args.workers for path in args.paths]
    settings = {"frames": config.frames, "crop": config.crop_size, "cache_side": config.resize,
                "batch": args.batch_size, "videos": len(manifest.table), "tiny": args.tiny, "goal_clips_per_s": GOAL}
    if args.json:
        print(json.dumps({"settings": settings, "results": results}, indent=2))
        return results
    scale = "TINY settings (exercise only, not the goal's)" if args.tiny else "T 16, 224 px"
    print(f"training loader from the cache, {scale}: T {config.frames}, {config.resize} px cache -> "
          f"{config.crop_size} px crop, batch {args.batch_size}, elastic on, {len(manifest.table)} videos")
    for r in results:
        where = {"cpu": "albumentations in the workers",
                 "gpu": f"torch on {r['device']} after transfer, {r['augment_ms_per_batch'] or 0:.1f} ms/batch",
                 "frames": f"uint8 frames to {r['device']}, not augmented: the workers' ceiling"}[r["path"]]
        print(f"  augment {r['path']} ({where}), {r['workers']} worker(s): {r['clips_per_s']:.1f} clips/s "
              f"(goal >= {GOAL:.0f} with 16 cores)")
    return results


if __name__ == "__main__":
    main()
