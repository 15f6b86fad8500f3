"""The configuration tree: the study's defaults, YAML < --fast < command line, typos rejected."""
from __future__ import annotations

from pathlib import Path

import pytest

from alnvid.config import RunConfig, resolve_config
from alnvid.errors import AlnvidError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_defaults_are_the_study_protocol():
    config = RunConfig()
    assert (config.data.frames, config.data.resize, config.data.crop_size) == (16, 256, 224)
    assert (config.optim.lr, config.trainer.batch_size, config.trainer.epochs) == (1e-4, 4, 300)
    assert config.model.name == "tin" and config.model.weights is None


def test_layers_apply_in_order(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("data: {frames: 12, resize: 128}\ntrainer: {epochs: 50}\n")
    config = resolve_config(file, fast_settings=True, overrides={"trainer.epochs": 7, "model.name": None})
    assert config.data.frames == 8          # --fast beats the file
    assert config.trainer.epochs == 7       # the command line beats both
    assert config.model.name == "tin"       # an option not given keeps the earlier value


def test_round_trip_and_typos(tmp_path):
    config = RunConfig()
    config.data.manifest = "m.csv"
    config.save(tmp_path / "config.yaml")
    assert RunConfig.load(tmp_path / "config.yaml") == config
    (tmp_path / "bad.yaml").write_text("trainer: {epoch: 3}\n")
    with pytest.raises(AlnvidError, match="unknown setting\\(s\\) trainer.epoch") as info:
        RunConfig.load(tmp_path / "bad.yaml")
    assert "epochs" in info.value.message


def test_example_files_stay_valid():
    config = RunConfig.load(EXAMPLES / "study.yaml")
    assert config.data.frames == 16 and config.trainer.precision == "bf16-mixed"
    header = (EXAMPLES / "cohort_template.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["patient_id", "path", "label"]
