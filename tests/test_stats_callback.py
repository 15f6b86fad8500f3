"""BootstrapAUC callback: logged CI keys on a real (tiny, CPU) Lightning run and on direct hook calls."""
from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from alnvid.callbacks import BootstrapAUC
from alnvid.stats import bootstrap_auc_ci, delong_ci

LABELS = np.array([0, 1] * 10)
PROBS = np.linspace(0.05, 0.95, 20)


class TinyModule(L.LightningModule):
    """Logistic regression on one feature that fills `epoch_outputs` like ALNClassifier."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)
        self.epoch_outputs: dict[str, list[tuple[str, int, float]]] = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.binary_cross_entropy_with_logits(self.linear(x).squeeze(1), y.float())

    def on_validation_epoch_start(self):
        self.epoch_outputs["val"] = []

    def validation_step(self, batch, batch_idx):
        x, y = batch
        start = len(self.epoch_outputs["val"])
        self.epoch_outputs["val"].extend((f"P{start + i}", int(label), float(x[i, 0]))
                                         for i, label in enumerate(y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_logs_cis_in_a_real_trainer_run():
    data = TensorDataset(torch.tensor(PROBS, dtype=torch.float32)[:, None], torch.tensor(LABELS))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[BootstrapAUC(n_boot=200, seed=3, log_auc=True)])
    trainer.fit(TinyModule(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    delong, boot = delong_ci(LABELS, PROBS), bootstrap_auc_ci(LABELS, PROBS, n_boot=200, seed=3)
    assert metrics["val_auc"] == pytest.approx(delong.auc, abs=1e-6)
    assert metrics["val_auc_delong_low"] == pytest.approx(delong.ci_low, abs=1e-6)
    assert metrics["val_auc_delong_high"] == pytest.approx(delong.ci_high, abs=1e-6)
    assert metrics["val_auc_boot_low"] == pytest.approx(boot.ci_low, abs=1e-6)
    assert metrics["val_auc_boot_high"] == pytest.approx(boot.ci_high, abs=1e-6)


class _Stub:
    """Just what the hooks use: epoch_outputs and log."""

    def __init__(self, outputs):
        self.epoch_outputs = outputs
        self.logged: dict[str, float] = {}

    def log(self, name, value, **kwargs):
        self.logged[name] = value


class _Trainer:
    sanity_checking = False


def test_test_stages_and_single_class_skipped():
    rows = [(f"P{i}", int(y), float(p)) for i, (y, p) in enumerate(zip(LABELS, PROBS))]
    stub = _Stub({"val": rows, "test_internal": rows, "test_external": [("P1", 1, 0.3), ("P2", 1, 0.6)]})
    with pytest.warns(UserWarning, match="single class"):
        BootstrapAUC(n_boot=100).on_test_epoch_end(_Trainer(), stub)
    assert set(stub.logged) == {"test_internal_auc_delong_low", "test_internal_auc_delong_high",
                                "test_internal_auc_boot_low", "test_internal_auc_boot_high"}
    assert stub.logged["test_internal_auc_delong_low"] == pytest.approx(delong_ci(LABELS, PROBS).ci_low)
