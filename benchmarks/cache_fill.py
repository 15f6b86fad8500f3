"""How long decoding a cohort into the cache takes, in one process and in worker processes (`PreprocessCache.fill`).

Usage: python benchmarks/cache_fill.py [MANIFEST] [--size 72] [--workers 1 2]
Without MANIFEST a 60-patient demo cohort is written first. Each run starts from an empty cache.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from alnvid.data.cache import PreprocessCache
from alnvid.data.datamodule import CACHE_WORKERS
from alnvid.data.demo import make_demo_cohort
from alnvid.data.manifest import load_manifest
from alnvid.utils import available_cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", nargs="?", type=Path)
    parser.add_argument("--size", type=int, default=72, help="Cached side in pixels (the CPU demo's 72).")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, min(CACHE_WORKERS, available_cores())])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        manifest = args.manifest or make_demo_cohort(Path(folder) / "cohort", patients=60, frames=32)
        table = load_manifest(manifest).table
        files = [*table["path"], *(p for p in table.get("still_path", []) if p)]
        for workers in args.workers:
            cache = PreprocessCache(Path(folder) / f"cache_{workers}", args.size)
            start = time.perf_counter()
            cache.fill([(file, None) for file in files], workers=workers)
            wall = time.perf_counter() - start
            print(f"{len(files)} files into a {args.size} px cache with {workers} worker(s): {wall:.1f} s "
                  f"({len(files) / wall:.1f} files/s, {available_cores()} cores)")


if __name__ == "__main__":
    main()
