"""Data pipeline speed: decode-from-scratch time per video, and clips/s of the VideoDataModule from the cache.

    python benchmarks/data_throughput.py                      # the real POCUS cohort in ../shared, else a demo cohort
    python benchmarks/data_throughput.py --manifest M.csv --workers 0 2 --frames 16 --batches 20

Prints one line per measurement; nothing is timed in the tests.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from alnvid.config import DataConfig
from alnvid.data.cache import PreprocessCache, preprocess_video
from alnvid.data.datamodule import VideoDataModule
from alnvid.data.manifest import load_manifest

POCUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pocus" / "manifest.csv"


def _manifest(args: argparse.Namespace, workdir: Path) -> Path:
    if args.manifest:
        return Path(args.manifest)
    if POCUS.is_file():
        from alnvid.data.cohort_import import POCUS_COLUMNS, import_manifest

        out = workdir / "pocus.csv"
        import_manifest(POCUS, out, POCUS_COLUMNS, test_fraction=0.2)
        return out
    from alnvid.data.demo import make_demo_cohort

    return make_demo_cohort(workdir / "demo", patients=40, frames=32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", help="cohort manifest (default: ../shared POCUS cohort, else a demo cohort)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to time")
    parser.add_argument("--frames", type=int, default=16, help="clip length T")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=25, help="batches timed per worker count")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        manifest = load_manifest(_manifest(args, workdir))
        paths = list(manifest.table["path"])
        print(f"cohort: {manifest.path} ({len(paths)} videos)")

        seconds = []
        for path in paths:
            start = time.perf_counter()
            preprocess_video(path, 256)
            seconds.append(time.perf_counter() - start)
        print(f"decode + crop + resize from scratch: median {statistics.median(seconds):.3f} s/video, "
              f"min {min(seconds):.3f}, max {max(seconds):.3f}, total {sum(seconds):.1f} s")

        config = DataConfig(frames=args.frames, cache_dir=str(workdir / "cache"), num_workers=0, elastic=True)
        module = VideoDataModule(manifest, config, batch_size=args.batch_size)
        start = time.perf_counter()
        module.prepare_data()
        print(f"filling the cache: {time.perf_counter() - start:.1f} s for {len(paths)} videos")
        cache = PreprocessCache(config.cache_dir, config.resize)
        start = time.perf_counter()
        for path in paths:
            cache.load(path)
        print(f"cache hit (hash + memory map): {1000 * (time.perf_counter() - start) / len(paths):.2f} ms/video, "
              f"{cache.decoded} decoded")

        for workers in args.workers:
            config.num_workers = workers
            loader = VideoDataModule(manifest, config, batch_size=args.batch_size).train_dataloader()
            clips, start, iterator = 0, None, iter(loader)
            for i in range(args.batches + 2):
                try:
                    batch = next(iterator)
                except StopIteration:
                    iterator = iter(loader)
                    batch = next(iterator)
                if i == 1:  # after warm-up (worker start-up)
                    start, clips = time.perf_counter(), 0
                clips += len(batch["label"])
            elapsed = time.perf_counter() - start
            print(f"VideoDataModule from cache, {workers} worker(s), T {args.frames}, 224 px, training "
                  f"augmentation: {clips / elapsed:.1f} clips/s")


if __name__ == "__main__":
    main()
