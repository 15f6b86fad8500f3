"""Model selection per patient: the monitored validation AUC, its CIs, the 'last' selection, and the settings a
resumed cross-validation must share with its finished folds."""
from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from alnvid.callbacks import BootstrapAUC
from alnvid.config import RunConfig, changed_result_settings
from alnvid.cv import run_cv
from alnvid.errors import AlnvidError
from alnvid.models.module import ALNClassifier, patient_scores
from alnvid.stats import delong_ci
from alnvid.train import MONITOR, resolve_auto, selection_callbacks

PATIENTS = ["P1", "P1", "P2", "P3", "P3", "P4"]
LABELS = [1, 1, 1, 0, 0, 0]
SCRIPT = [
    [0.9, 0.1, 0.8, 0.45, 0.45, 0.2],  # epoch 0: per patient 0.5, 0.8 | 0.45, 0.2 -> AUC 1.0; per video 6/9
    [0.6, 0.6, 0.3, 0.5, 0.5, 0.2],    # epoch 1: per patient 0.6, 0.3 | 0.5, 0.2 -> AUC 3/4; per video 7/9
]


def _auc(labels, probs) -> float:
    """Mann-Whitney AUC by brute force (ties count 1/2)."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    cases, controls = probs[labels == 1], probs[labels == 0]
    return float(np.mean([(c > d) + 0.5 * (c == d) for c in cases for d in controls]))


def _patient_means(epoch: int) -> tuple[list[int], list[float]]:
    means = {}
    for patient, label, prob in zip(PATIENTS, LABELS, SCRIPT[epoch]):
        means.setdefault(patient, (label, []))[1].append(prob)
    return [label for label, _ in means.values()], [float(np.mean(p)) for _, p in means.values()]


def test_the_scripted_epochs_rank_differently_per_video_and_per_patient():
    """The premise of the monitor test, from an independent computation."""
    per_video = [_auc(LABELS, SCRIPT[e]) for e in (0, 1)]
    per_patient = [_auc(*_patient_means(e)) for e in (0, 1)]
    assert per_video == pytest.approx([6 / 9, 7 / 9]) and per_patient == pytest.approx([1.0, 0.75])


def test_patient_scores_average_videos_and_split_mixed_labels():
    labels, probs = patient_scores([("A", 1, 0.2), ("B", 0, 0.4), ("A", 1, 0.6), ("C", 1, 0.1), ("C", 0, 0.3)])
    assert labels.tolist() == [1, 0, 1, 0]  # A once (mean), B, then C once per video (its labels differ)
    assert probs == pytest.approx([0.4, 0.4, 0.1, 0.3])


class ScriptedClassifier(ALNClassifier):
    """ALNClassifier's evaluation hooks with scripted per-video probabilities (SCRIPT[epoch]) instead of a network."""

    def __init__(self):
        L.LightningModule.__init__(self)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.epoch_outputs = {}
        self._gathered = set()
        self.test_split_names = []
        self.run_config = None

    def class_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        p1 = torch.tensor([SCRIPT[self.current_epoch][int(i)] for i in x])
        return torch.stack([1 - p1, p1], dim=1)

    def training_step(self, batch, batch_idx):
        return (self.weight ** 2).sum() + 1.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_scripted(tmp_path, selection: str) -> tuple[L.Trainer, L.Callback]:
    items = [{"x": i, "label": label, "patient_id": patient, "line": i + 2}
             for i, (patient, label) in enumerate(zip(PATIENTS, LABELS))]
    config = RunConfig()
    config.trainer.selection = selection
    checkpoint, last, *stopping = selection_callbacks(config, tmp_path / "checkpoints")
    assert last.save_weights_only is False and not stopping
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[checkpoint, BootstrapAUC(n_boot=200, seed=1)])
    trainer.fit(ScriptedClassifier(), DataLoader(items[:2], batch_size=2), DataLoader(items, batch_size=4))
    return trainer, checkpoint


def test_checkpoint_keeps_the_epoch_of_best_per_patient_auc(tmp_path):
    trainer, checkpoint = _fit_scripted(tmp_path, "best")
    assert checkpoint.monitor == MONITOR == "val_auc"
    assert torch.load(checkpoint.best_model_path, weights_only=False)["epoch"] == 0  # per video would pick 1
    assert float(checkpoint.best_model_score) == pytest.approx(1.0)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["val_auc"] == pytest.approx(0.75)  # epoch 1, per patient (per video: 7/9)
    ci = delong_ci(np.array(_patient_means(1)[0]), np.array(_patient_means(1)[1]))
    assert (metrics["val_auc_delong_low"], metrics["val_auc_delong_high"]) == pytest.approx((ci.ci_low, ci.ci_high))


class _BestFileSeen(L.Callback):
    """Records, at the start of each training epoch, whether best.ckpt exists yet."""

    def __init__(self, path):
        self.path, self.seen = path, []

    def on_train_epoch_start(self, trainer, pl_module):
        self.seen.append(self.path.exists())


def test_selection_last_keeps_the_final_epoch_written_once(tmp_path):
    config = RunConfig()
    config.trainer.selection = "last"
    best, last = selection_callbacks(config, tmp_path / "checkpoints")
    assert best.monitor is None and best.state_key != last.state_key
    seen = _BestFileSeen(tmp_path / "checkpoints" / "best.ckpt")
    items = [{"x": i, "label": label, "patient_id": patient, "line": i + 2}
             for i, (patient, label) in enumerate(zip(PATIENTS, LABELS))]
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[best, last, seen, BootstrapAUC(n_boot=200, seed=1)])
    trainer.fit(ScriptedClassifier(), DataLoader(items[:2], batch_size=2), DataLoader(items, batch_size=4))
    assert seen.seen == [False, False]  # not rewritten after every epoch
    saved = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    assert saved["epoch"] == 1 and "optimizer_states" not in saved
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1


def test_early_stopping_monitors_the_per_patient_auc():
    config = RunConfig()
    config.trainer.patience = 3
    _, _, stopping = selection_callbacks(config, RunConfig().out)
    assert stopping.monitor == MONITOR and stopping.patience == 3
    with pytest.raises(AlnvidError, match="patience"):
        config.trainer.selection = "last"
        config.trainer.__post_init__()


def test_every_setting_that_changes_results_is_compared():
    saved, wanted = RunConfig(), RunConfig()
    wanted.data.cache_dir, wanted.data.num_workers, wanted.trainer.accelerator = "elsewhere", 7, "cpu"
    wanted.out = "runs/other"
    assert changed_result_settings(saved, wanted) == []
    wanted.trainer.patience, wanted.trainer.limit_train_batches, wanted.data.eval_clips = 5, 0.5, 3
    wanted.trainer.selection = "best"
    assert changed_result_settings(saved, wanted) == ["data.eval_clips", "trainer.limit_train_batches",
                                                      "trainer.patience"]


def test_val_every_changes_results_only_where_an_epoch_is_chosen_on_validation():
    saved, wanted = RunConfig(), RunConfig()
    wanted.trainer.val_every = 5
    assert changed_result_settings(saved, wanted) == ["trainer.val_every"]  # 'best' picks among validated epochs
    saved.trainer.selection = wanted.trainer.selection = "last"
    assert changed_result_settings(saved, wanted) == []  # the last epoch, whatever was validated


@pytest.mark.parametrize("setting, value", [("patience", 4), ("limit_train_batches", 0.5)])
def test_cv_refuses_to_resume_a_fold_trained_with_another_setting(tiny_cohort, tiny_data_config, tmp_path, setting,
                                                                  value):
    config = RunConfig(data=tiny_data_config, out=str(tmp_path / "cv"))
    config.data.manifest = str(tiny_cohort)
    config.trainer.progress = False
    earlier = RunConfig.from_dict(config.to_dict())
    earlier.data.fold, earlier.data.num_folds, earlier.out = 0, 2, str(tmp_path / "cv" / "fold_0")
    setattr(earlier.trainer, setting, value)
    resolve_auto(earlier)  # a run saves its settings resolved for the hardware it ran on
    (tmp_path / "cv" / "fold_0" / "checkpoints").mkdir(parents=True)
    earlier.save(tmp_path / "cv" / "fold_0" / "config.yaml")  # an interrupted fold, trained with `value`
    (tmp_path / "cv" / "fold_0" / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(AlnvidError, match=f"other settings \\(trainer.{setting}\\)"):
        run_cv(config, folds=2)


class _LastEpochStored(L.Callback):
    """Records, at the start of each training epoch, the epoch stored in last.ckpt (None before the first)."""

    def __init__(self, path):
        self.path, self.seen = path, []

    def on_train_epoch_start(self, trainer, pl_module):
        self.seen.append(torch.load(self.path, weights_only=False)["epoch"] if self.path.is_file() else None)


def test_validating_every_few_epochs_keeps_the_same_model(tiny_cohort, tiny_data_config, tmp_path):
    """With selection 'last', validating every 2nd epoch (and the final one) trains the very same network as
    validating every epoch; epochs.csv leaves the unvalidated epoch's validation columns empty, and last.ckpt is
    still written after every epoch, validated or not."""
    from alnvid.train import fit

    stored = _LastEpochStored(tmp_path / "every_2" / "checkpoints" / "last.ckpt")

    def run(val_every: int, *callbacks):
        config = RunConfig(data=tiny_data_config, out=str(tmp_path / f"every_{val_every}"))
        config.data.manifest, config.data.fold, config.data.num_folds = str(tiny_cohort), 0, 2
        config.model.name, config.optim.lr = "resnet50", 1e-3
        config.trainer.epochs, config.trainer.selection, config.trainer.val_every = 3, "last", val_every
        config.trainer.progress, config.trainer.checkpoint_every_s, config.explain.export = False, 0, False
        return fit(config, extra_callbacks=list(callbacks))

    every, sparse = run(1), run(2, stored)
    assert stored.seen == [None, 0, 1]  # epoch 0 did not validate, and was saved all the same
    weights = [torch.load(r.best_checkpoint, weights_only=False)["state_dict"] for r in (every, sparse)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert every.val_auc == sparse.val_auc and every.test_auc == sparse.test_auc
    dense, thin = (pd.read_csv(r.out / "epochs.csv") for r in (every, sparse))
    assert dense["val_loss"].notna().all()
    assert thin["val_loss"].isna().tolist() == [True, False, False]  # epoch 2 (every 2nd) and the final epoch 3
    assert thin.loc[1:, "val_loss"].tolist() == pytest.approx(dense.loc[1:, "val_loss"].tolist())
    assert thin["train_loss"].tolist() == dense["train_loss"].tolist()


def test_val_every_must_be_a_whole_number_of_epochs():
    for bad in (0, -1, 1.5, True):
        config = RunConfig()
        config.trainer.val_every = bad
        with pytest.raises(AlnvidError, match="val_every"):
            config.trainer.__post_init__()
