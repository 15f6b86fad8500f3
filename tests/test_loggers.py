"""--logger csv|tensorboard|mlflow: Lightning's loggers under <run>/logs/, beside the run's own epochs.csv."""
from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
from typer.testing import CliRunner

from alnvid.cli.main import app
from alnvid.cli.train import training_overrides
from alnvid.config import RunConfig, resolve_config
from alnvid.errors import AlnvidError
from alnvid.train import fit


def test_csv_and_tensorboard_log_the_epoch_metrics(tiny_cohort, tiny_data_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = RunConfig(data=tiny_data_config, out=str(tmp_path / "run"))
    config.data.manifest = str(tiny_cohort)
    config.model.name = "resnet50"
    config.trainer.epochs, config.trainer.progress, config.explain.export = 2, False, False
    config.trainer.loggers = ["csv", "tensorboard"]
    fit(config)
    out = tmp_path / "run"
    epochs = pd.read_csv(out / "epochs.csv")  # the run's own history stays
    assert epochs["epoch"].tolist() == [0, 1]

    logged = pd.read_csv(out / "logs" / "csv" / "version_0" / "metrics.csv")
    val = logged.dropna(subset=["val_auc"])
    assert val["epoch"].tolist() == [0, 1]
    assert val["val_auc"].to_numpy() == pytest.approx(epochs["val_auc"].to_numpy(), abs=1e-6)
    assert logged["train_loss"].dropna().to_numpy() == pytest.approx(epochs["train_loss"].to_numpy(), abs=1e-6)

    events = list((out / "logs" / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    assert len(events) == 1
    scalars = EventAccumulator(str(events[0])).Reload()
    assert {"val_auc", "val_loss", "val_acc", "train_loss"} <= set(scalars.Tags()["scalars"])
    assert [e.value for e in scalars.Scalars("val_auc")] == pytest.approx(epochs["val_auc"].to_numpy(), abs=1e-6)


def test_logger_option_takes_repeats_and_comma_lists():
    def loggers(*given):
        return resolve_config(None, fast_settings=False, overrides=training_overrides(logger=list(given))).trainer.loggers

    assert loggers("csv", "tensorboard") == ["csv", "tensorboard"]
    assert loggers("csv,tensorboard") == ["csv", "tensorboard"]
    assert loggers() == []
    with pytest.raises(AlnvidError, match="(?s)trainer.loggers is 'wandb'.*csv, tensorboard, mlflow"):
        loggers("csv,wandb")


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="MLflow is installed here")
def test_missing_mlflow_is_named_with_the_fix_before_anything_is_written(tiny_cohort, tmp_path):
    result = CliRunner().invoke(app, ["fit", "--data", str(tiny_cohort), "--fast", "--out", str(tmp_path / "r"),
                                      "--cache-dir", str(tmp_path / "c"), "--logger", "mlflow"])
    assert result.exit_code == 2, result.output
    assert "--logger mlflow" in result.output and "pip install mlflow" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()
