"""Lightning callbacks: per-epoch history, bootstrapped AUC confidence intervals, reseeding, fold bookkeeping.
(The Grad-CAM export callback lives with the rest of Grad-CAM, in alnvid.explain.export.)"""
from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_warn

from alnvid.errors import StatsInputError
from alnvid.stats.bootstrap import DEFAULT_N_BOOT, bootstrap_auc_ci
from alnvid.stats.delong import delong_ci
from alnvid.utils import atomic_write_csv, atomic_write_text

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "val_auc_delong_low",
                   "val_auc_delong_high", "val_auc_boot_low", "val_auc_boot_high")


class EpochHistory(L.Callback):
    """Keeps `epochs.csv`: one row per finished epoch with training and validation loss, accuracy and AUROC.

    The file is rewritten atomically each epoch; on resume, rows of epochs that are run again are replaced.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        for name in HISTORY_COLUMNS[1:]:
            value = metrics.get(name)
            row[name] = float(value) if value is not None else math.nan
        history = pd.read_csv(self.path) if self.path.is_file() else pd.DataFrame(columns=HISTORY_COLUMNS)
        history = history[history["epoch"] < trainer.current_epoch]
        history = pd.concat([history, pd.DataFrame([row])], ignore_index=True)
        atomic_write_csv(history, self.path)


class EpochSeed(L.Callback):
    """Reseeds the global RNGs at the start of each epoch from (seed, epoch).

    The model's own randomness (dropout) then depends on the seed and the epoch alone; the data's order and
    augmentation already do (SeededShuffle). Together a run resumed from its last checkpoint continues as the
    uninterrupted run would (exactly so on the CPU).
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        L.seed_everything(self.seed * 10_007 + trainer.current_epoch, workers=True, verbose=False)
        # Under DDP Lightning wraps the training sampler and sets the epoch on its wrapper only; the wrapped
        # SeededShuffle needs it too, or every epoch would repeat epoch 0's augmentation seeds.
        wrapped = getattr(getattr(getattr(trainer.train_dataloader, "sampler", None), "dataset", None), "_sampler", None)
        if hasattr(wrapped, "set_epoch"):
            wrapped.set_epoch(trainer.current_epoch)


class FoldBookkeeping(L.Callback):
    """Records a cross-validation fold's state in `fold.json` (running, epoch reached, finished)."""

    def __init__(self, path: str | Path, fold: int, num_folds: int):
        self.path = Path(path)
        self.fold = fold
        self.num_folds = num_folds

    def _write(self, status: str, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        state = {"fold": self.fold, "num_folds": self.num_folds, "status": status,
                 "epoch": trainer.current_epoch, "max_epochs": trainer.max_epochs}
        atomic_write_text(self.path, json.dumps(state, indent=2))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write("running", trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write("running", trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write("trained", trainer)


class BootstrapAUC(L.Callback):
    """Logs 95% CIs of each evaluation epoch's AUC: DeLong and a stratified bootstrap (pROC's methods).

    Reads the module's predictions of the epoch (`gathered_outputs(stage)`, from every process under DDP,
    else `epoch_outputs[stage]`), a list of (patient_id, label, prob, ...) tuples, and logs
    ``{stage}_auc_delong_low/high`` and ``{stage}_auc_boot_low/high`` for "val" after validation and for
    every other stage (the test splits) after testing. ``{stage}_auc`` itself is logged only with
    ``log_auc=True``, since ALNClassifier already logs it. A stage whose predictions hold a single class has
    no AUC: it is skipped with a warning.
    """

    def __init__(self, n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = 0.95, log_auc: bool = False):
        self.n_boot = n_boot
        self.seed = seed
        self.level = level
        self.log_auc = log_auc

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log_stage(pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for stage in getattr(pl_module, "epoch_outputs", {}):
            if stage != "val":
                self._log_stage(pl_module, stage)

    def _log_stage(self, pl_module: L.LightningModule, stage: str) -> None:
        gathered = getattr(pl_module, "gathered_outputs", None)
        outputs = gathered(stage) if gathered else getattr(pl_module, "epoch_outputs", {}).get(stage, [])
        labels = np.array([int(o[1]) for o in outputs])
        probs = np.array([float(o[2]) for o in outputs])
        try:
            delong = delong_ci(labels, probs, self.level)
            boot = bootstrap_auc_ci(labels, probs, self.n_boot, self.seed, self.level)
        except StatsInputError as error:
            rank_zero_warn(f"BootstrapAUC: no AUC confidence interval for {stage} this epoch (a single class, or "
                           f"fewer than 2 cases or controls): {error.problem}",
                           category=UserWarning)
            return
        values = {f"{stage}_auc_delong_low": delong.ci_low, f"{stage}_auc_delong_high": delong.ci_high,
                  f"{stage}_auc_boot_low": boot.ci_low, f"{stage}_auc_boot_high": boot.ci_high}
        if self.log_auc:
            values[f"{stage}_auc"] = delong.auc
        for name, value in values.items():
            pl_module.log(name, float(value), add_dataloader_idx=False, sync_dist=True)  # equal on every process
