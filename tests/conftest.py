"""Shared fixtures: a tiny demo cohort (real DICOM files written by alnvid.data.demo) and the ../shared data."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = Path(__file__).parent / "fixtures"
POCUS = SHARED / "data" / "pocus"
ALN_ULTRA_INDEX = SHARED / "reference" / "aln_ultra" / "data_image_selected_video.json"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """A loader of `benchmarks/<name>.py` as a module: the benchmarks are scripts, not a package."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def pocus_dir() -> Path:
    if not (POCUS / "manifest.csv").is_file():
        pytest.skip(f"the real POCUS cohort is not at {POCUS} (it lives in ../shared beside the checkout)")
    return POCUS


@pytest.fixture(scope="session")
def aln_ultra_index() -> Path:
    if not ALN_ULTRA_INDEX.is_file():
        pytest.skip(f"ALN-Ultra's index file is not at {ALN_ULTRA_INDEX} (it lives in ../shared beside the checkout)")
    return ALN_ULTRA_INDEX


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """24 patients x 8 frames of 96x128 px DICOM: train (16) / test_a (4) / test_b (4), 2 cases and 2 controls per test split."""
    from alnvid.data.demo import make_demo_cohort

    return make_demo_cohort(tmp_path_factory.mktemp("cohort"), patients=24, frames=8, seed=0, frame_size=(96, 128))


@pytest.fixture()
def tiny_data_config(tmp_path):
    """Data settings small enough for a 2-core CPU: T 4, 40 px cache, 32 px crop, no workers."""
    from alnvid.config import DataConfig

    return DataConfig(frames=4, resize=40, crop_size=32, input_size=32, elastic=False, num_workers=0,
                      cache_dir=str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def asah():
    """pROC's aSAH data set (tests/fixtures/proc_asah), with y = 1 for a poor outcome (the 'case')."""
    import pandas as pd

    table = pd.read_csv(FIXTURES / "proc_asah" / "aSAH.csv")
    table["y"] = (table["outcome"] == "Poor").astype(int)
    return table


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained R(2+1)D-18 best.ckpt with tiny settings embedded (T 4, 40 px cache, 32 px input)."""
    import lightning as L
    import torch

    from alnvid.config import RunConfig
    from alnvid.models.module import RUN_CONFIG_KEY, ALNClassifier

    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = RunConfig()
    config.model.name = "r2plus1d_18"
    config.data.frames, config.data.resize, config.data.crop_size, config.data.input_size = 4, 40, 32, 32
    config.data.cache_dir = str(root / "cache")
    module = ALNClassifier("r2plus1d_18", num_frames=4)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": L.__version__, RUN_CONFIG_KEY: config.to_dict()}, root / "best.ckpt")
    return root / "best.ckpt"
