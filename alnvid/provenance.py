"""What produced a run: package and library versions, git commit, hardware, seed and manifest hash.

The CPU, the vector instructions torch's kernels use and the thread count are recorded because a run repeats to
the last digit on the same machine only: another CPU rounds differently, and the demo's AUCs move by a few
hundredths (README, "The demo")."""
from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import alnvid


def provenance(*, seed: int, manifest_sha256: str | None) -> dict:
    """A JSON-ready record saved in every run folder and shown in reports."""
    import lightning
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    return {
        "alnvid": alnvid.__version__,
        "git_commit": _git_commit(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "manifest_sha256": manifest_sha256,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def _cpu_model() -> str | None:
    """The processor's name (Linux: /proc/cpuinfo's first "model name"), else what `platform` knows, else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_commit() -> str | None:
    """The commit of the alnvid source tree, with '+dirty' when it has uncommitted changes; None outside git."""
    root = Path(alnvid.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")
