"""Run every benchmark with its default (CPU-sized) settings and print their figures."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = {"demo_variant.py"}
"""Development tools here that need arguments (a folder and a seed), not benchmarks with defaults."""
DEMO = Path("runs/demo/runs/tin-cv/cv_summary.json")
NEEDS_DEMO = {"demo_validity.py"}
"""Benchmarks that score `make demo`'s run, and alone would train one first (about 11 minutes on 2 cores)."""


def main() -> int:
    status = 0
    for script in sorted(HERE.glob("*.py")):
        if script.name == Path(__file__).name or script.name in TOOLS:
            continue
        print(f"\n=== {script.name} ===", flush=True)
        if script.name in NEEDS_DEMO and not DEMO.is_file():
            print(f"skipped: no finished demo in {DEMO.parents[2]}. Run `make demo` first, or this script alone "
                  "(it runs the demo).", flush=True)
            continue
        status |= subprocess.call([sys.executable, str(script)])
    return status


if __name__ == "__main__":
    sys.exit(main())
