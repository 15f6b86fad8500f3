"""alnvid never reaches for the network at run time (hospital workstations are offline).

A tiny `fit` runs in a fresh interpreter whose sockets refuse every connection and name lookup and report
each attempt; the run must make none, and print no network-related warning.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCK_SOCKETS = """
import socket, sys

def refuse(*args, **kwargs):
    sys.stderr.write(f"NETWORK ATTEMPT {args[1:] or args!r}\\n")
    raise OSError("network blocked by the offline test")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = socket.gethostbyname = refuse
"""

NETWORK_WORDS = re.compile(r"NETWORK ATTEMPT|version info|check for updates|name resolution|urlopen|"
                           r"connection|unreachable|timed? ?out|https?://", re.IGNORECASE)


def _run_blocked(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}  # alnvid must set it itself
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-W", "default", "-c", BLOCK_SOCKETS + code, *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_the_socket_block_catches_the_albumentations_update_check(tmp_path):
    """Without alnvid's setting albumentations looks online at import: the blocker sees it."""
    done = _run_blocked("import albumentations", cwd=tmp_path)
    assert "NETWORK ATTEMPT" in done.stderr


def test_fit_makes_no_network_call(tiny_cohort, tmp_path):
    done = _run_blocked("import sys; sys.argv[0] = 'alnvid'; from alnvid.cli.main import app; app()",
                        "fit", "--data", str(tiny_cohort), "--model", "resnet50", "--fast", "--epochs", "1",
                        "--frames", "4", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                        "--logger", "csv,tensorboard", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout[done.stdout.index("{"):])["best_epoch"] == 0
    assert (tmp_path / "run" / "gradcam" / "test_a" / "index.csv").is_file()  # Grad-CAM and plots ran too
    found = NETWORK_WORDS.findall(done.stderr + done.stdout)
    assert not found, done.stderr[-3000:]
