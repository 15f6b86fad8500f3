"""Multi-device training (DDP, 2 CPU processes over gloo) gives the results a one-device run gives.

The cohort has odd numbers of validation videos and test patients, so the distributed sampler pads a shard
with a repeated item, and patients with two videos, so the repeats must be told apart by manifest line.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch.distributed as dist
import numpy as np
import pandas as pd
import pytest
import yaml
from lightning.fabric.utilities.distributed import _suggested_max_num_threads
from torch.utils.data import DistributedSampler
from typer.testing import CliRunner

from alnvid.callbacks import BootstrapAUC
from alnvid.cli.main import app
from alnvid.config import RunConfig
from alnvid.data.manifest import load_manifest
from alnvid.models import module as module_file
from alnvid.models.module import ALNClassifier, gather_rows
from alnvid.train import build_datamodule, predict_splits, read_predictions, video_predictions_path

ROOT = Path(__file__).resolve().parents[1]


def _odd_cohort(tiny_cohort: Path, folder: Path) -> Path:
    """5 validation patients with 7 videos (two patients have a second one), 11 training patients, and a
    test_a of 3 patients."""
    table = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False)
    table["path"] = [str((tiny_cohort.parent / p).resolve()) for p in table["path"]]
    table["still_path"] = [str((tiny_cohort.parent / p).resolve()) if p else "" for p in table["still_path"]]
    train = table.index[table["split"] == "train"]
    val = [i for label in ("0", "1") for i in train[table.loc[train, "label"] == label][:3]][:5]
    table.loc[val, "split"] = "val"
    table = table.drop(table.index[table["split"] == "test_a"][-1])  # keeps both classes (2 + 1)
    extra = table.loc[val[:2]].copy()
    for i, row in extra.iterrows():
        copy = folder / f"second_{Path(row['path']).name}"
        shutil.copy(row["path"], copy)
        extra.loc[i, ["path", "still_path"]] = [str(copy), ""]
    manifest = folder / "manifest.csv"
    pd.concat([table, extra]).to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def ddp_run(tiny_cohort, tmp_path_factory):
    """A 2-epoch ResNet50 fit with 2 CPU processes (DDP over gloo), started as a user would, from the CLI."""
    folder = tmp_path_factory.mktemp("ddp")
    manifest = _odd_cohort(tiny_cohort, folder)
    config = {"data": {"manifest": str(manifest), "frames": 4, "resize": 40, "crop_size": 32, "input_size": 32,
                       "elastic": False, "num_workers": 0, "cache_dir": str(folder / "cache")},
              "model": {"name": "resnet50"},
              "trainer": {"epochs": 2, "batch_size": 2},
              "explain": {"export": False}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    out = folder / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "alnvid", "fit", "--config", str(folder / "config.yaml"), "--out", str(out),
         "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--json"],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sync_dist" not in done.stderr  # no metric is left to one process's shard
    yield out, json.loads(done.stdout[done.stdout.index("{"):])  # one summary: the other process stays quiet
    shutil.rmtree(folder, ignore_errors=True)


def test_ddp_predictions_and_scores_equal_one_device(ddp_run):
    out, summary = ddp_run
    config = RunConfig.load(out / "config.yaml")
    assert (config.trainer.devices, config.trainer.strategy) == ("2", "ddp")
    manifest = load_manifest(config.data.manifest)
    module = ALNClassifier.load_from_checkpoint(out / "checkpoints" / "best.ckpt", map_location="cpu", weights=None)
    datamodule = build_datamodule(config, manifest)
    module.test_split_names = datamodule.test_split_names
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[BootstrapAUC(n_boot=500)])
    reference = predict_splits(trainer, module, datamodule, out.parent)  # one process, the same weights

    expected_patients = {"val": 5, "test_a": 3, "test_b": 4}
    for split, count in expected_patients.items():
        ddp = read_predictions(out / f"predictions_{split}.csv")
        one = read_predictions(reference[split])
        assert len(ddp) == count and ddp["patient_id"].is_unique, split
        assert ddp["patient_id"].tolist() == one["patient_id"].tolist(), split
        assert ddp["label"].tolist() == one["label"].tolist(), split
        assert np.allclose(ddp["prob"], one["prob"], atol=1e-6), split
        ddp_videos, one_videos = (read_predictions(video_predictions_path(Path(path)))
                                  for path in (out / f"predictions_{split}.csv", reference[split]))
        assert ddp_videos["line"].tolist() == one_videos["line"].tolist() == manifest.rows(split)["line"].tolist()
        assert np.allclose(ddp_videos["prob"], one_videos["prob"], atol=1e-6), split
    val_rows = manifest.rows("val")
    assert len(val_rows) == 7 and set(read_predictions(out / "predictions_val.csv")["patient_id"]) == \
        set(val_rows["patient_id"])

    # the epoch scores that chose the checkpoint: the whole validation set, once per video
    metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert len(module.epoch_outputs["val"]) == 7
    epochs = pd.read_csv(out / "epochs.csv")
    assert epochs["epoch"].tolist() == [0, 1]
    best = epochs.loc[epochs["epoch"] == summary["best_epoch"]].iloc[0]
    assert best["val_auc"] == epochs["val_auc"].max()
    for name in ("val_auc", "val_acc", "val_loss", "val_auc_delong_low", "val_auc_delong_high"):
        assert best[name] == pytest.approx(metrics[name], abs=1e-5), name
    # BootstrapAUC bootstraps validation on the last epoch only: that row against last.ckpt on one device
    last = ALNClassifier.load_from_checkpoint(out / "checkpoints" / "last.ckpt", map_location="cpu", weights=None)
    last_metrics = trainer.validate(last, datamodule=datamodule, verbose=False)[0]
    for name in ("val_auc", "val_auc_boot_low", "val_auc_boot_high"):
        assert epochs[name].iloc[-1] == pytest.approx(last_metrics[name], abs=1e-5), name
    assert summary["val_auc"] == pytest.approx(json.loads((out / "summary.json").read_text())["val_auc"])
    # the threads each DDP process trained with (Lightning divides the cores between the 2 processes at fit start)
    threads = os.environ.get("OMP_NUM_THREADS") or _suggested_max_num_threads(2)
    assert json.loads((out / "provenance.json").read_text())["threads"] == int(threads)


def test_ddp_run_writes_each_file_once(ddp_run):
    out, _ = ddp_run
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["checkpoints", "config.yaml", "curves.png", "epochs.csv", "predictions_test_a.csv",
         "predictions_test_a_videos.csv", "predictions_test_b.csv", "predictions_test_b_videos.csv",
         "predictions_val.csv", "predictions_val_videos.csv", "provenance.json", "summary.json"])
    assert not list(out.rglob("*.tmp*"))


def test_spawned_strategies_are_refused_before_anything_is_written(tiny_cohort, tmp_path):
    result = CliRunner().invoke(app, ["fit", "--data", str(tiny_cohort), "--fast", "--out", str(tmp_path / "r"),
                                      "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp_spawn"])
    assert result.exit_code == 2, result.output
    assert "--strategy ddp_spawn" in result.output and "--strategy ddp" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


@pytest.mark.parametrize("items, processes", [(7, 2), (8, 2), (10, 3), (1, 2), (5, 4)])
def test_gathering_restores_the_dataset_order_without_the_padding(monkeypatch, items, processes):
    """What each process of Lightning's evaluation sampler sees, merged back: every item once, in order."""
    shards = [list(DistributedSampler(range(items), num_replicas=processes, rank=r, shuffle=False))
              for r in range(processes)]
    assert sum(map(len, shards)) == items + (-items % processes)  # the padding repeats
    monkeypatch.setattr(module_file.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(module_file.dist, "get_world_size", lambda: processes)
    monkeypatch.setattr(module_file.dist, "all_gather_object", lambda out, rows: out.__setitem__(slice(None), shards))
    assert gather_rows(shards[0], key=lambda index: index) == list(range(items))
    monkeypatch.undo()
    assert not dist.is_initialized() and gather_rows([3, 1, 3], key=lambda index: index) == [3, 1, 3]
