"""Run every benchmark with its default (CPU-sized) settings and print their figures."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = {"demo_variant.py"}
"""Development tools here that need arguments (a folder and a seed), not benchmarks with defaults."""


def main() -> int:
    status = 0
    for script in sorted(HERE.glob("*.py")):
        if script.name == Path(__file__).name or script.name in TOOLS:
            continue
        print(f"\n=== {script.name} ===", flush=True)
        status |= subprocess.call([sys.executable, str(script)])
    return status


if __name__ == "__main__":
    sys.exit(main())
