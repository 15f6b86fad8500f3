"""Lightning callbacks: per-epoch history, bootstrapped AUC confidence intervals, reseeding, fold bookkeeping, and
the paired DeLong comparison with a reference. (The Grad-CAM export callback lives with the rest of Grad-CAM, in
alnvid.explain.export.)"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from alnvid.data.manifest import TRAIN_SPLITS, Manifest
from alnvid.errors import AlnvidError, StatsInputError
from alnvid.models.module import gather_rows, patient_scores
from alnvid.provenance import provenance
from alnvid.stats.bootstrap import DEFAULT_N_BOOT, bootstrap_auc_ci
from alnvid.stats.delong import delong_ci, delong_test
from alnvid.stats.predictions import load_predictions, patient_level
from alnvid.utils import atomic_write_csv, atomic_write_text

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "val_auc_delong_low",
                   "val_auc_delong_high", "val_auc_boot_low", "val_auc_boot_high")


class EpochHistory(L.Callback):
    """Keeps `epochs.csv`: one row per finished epoch with training and validation loss, accuracy and AUROC
    (validation loss per video; validation accuracy, AUROC and its CIs per patient).

    The file is rewritten atomically each epoch; on resume, rows of epochs that are run again are replaced.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._validated = -1

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        validated = self._validated == trainer.current_epoch  # else the metrics are an earlier epoch's
        for name in HISTORY_COLUMNS[1:]:
            value = metrics.get(name) if validated or not name.startswith("val_") else None
            row[name] = float(value) if value is not None else math.nan
        history = pd.read_csv(self.path) if self.path.is_file() else pd.DataFrame(columns=HISTORY_COLUMNS)
        history = history[history["epoch"] < trainer.current_epoch]
        history = pd.concat([history, pd.DataFrame([row])], ignore_index=True)
        atomic_write_csv(history, self.path)


class ProvenanceRecord(L.Callback):
    """Writes the run's provenance.json (`alnvid.provenance`) as training starts, from the process that writes
    files: its thread count is then the one training uses, as Lightning's CPU DDP divides the cores among its
    processes only once `fit` has begun."""

    def __init__(self, path: Path, seed: int, manifest_sha256: str | None):
        self.path, self.seed, self.manifest_sha256 = Path(path), seed, manifest_sha256

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            atomic_write_text(self.path, json.dumps(provenance(seed=self.seed, manifest_sha256=self.manifest_sha256),
                                                    indent=2))


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


class ValidationSchedule(L.Callback):
    """Validates every `every` epochs and always after the final one, which Lightning's `check_val_every_n_epoch`
    alone skips when `every` does not divide the epoch count. The Trainer starts with
    `check_val_every_n_epoch=every`; this sets it to 1 for the epochs that validate."""

    def __init__(self, every: int):
        self.every = every

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        final = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        trainer.check_val_every_n_epoch = 1 if final or (epoch + 1) % self.every == 0 else self.every


class PeriodicCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """A ModelCheckpoint without a monitor (here: last.ckpt) written after an epoch only once `every_s` seconds have
    passed since the previous write, and always after the final epoch (or the one where early stopping ends
    training). It saves at the end of the training epoch, after that epoch's validation if there is one, so
    epochs that do not validate (`ValidationSchedule`) are saved too.

    Training is reseeded every epoch (EpochSeed), so a resume replays the epochs after the checkpoint exactly.
    """

    def __init__(self, *args, every_s: float, **kwargs):
        super().__init__(*args, save_on_train_epoch_end=True, **kwargs)
        self.every_s = every_s
        self._written = time.monotonic()

    @property
    def state_key(self) -> str:
        """Distinct per file: best.ckpt and last.ckpt may both be PeriodicCheckpoints without a monitor."""
        return self._generate_state_key(filename=self.filename, monitor=self.monitor, every_s=self.every_s)

    def _due(self, trainer: L.Trainer) -> bool:
        now = time.monotonic()
        final = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        # every process must agree, or a save's barrier would wait for ones whose clocks said no
        due = trainer.strategy.broadcast(final or trainer.should_stop or now - self._written >= self.every_s)
        if due:
            self._written = now
        return due

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._written = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due(trainer):
            super().on_train_epoch_end(trainer, pl_module)


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
    """Logs 95% CIs of each evaluation epoch's per-patient AUC: DeLong and a stratified bootstrap (pROC's methods).

    Reads the module's per-video predictions of the epoch (`gathered_outputs(stage)`, from every process under
    DDP, else `epoch_outputs[stage]`), a list of (patient_id, label, prob, ...) tuples, averages each patient's
    videos (`patient_scores`: patients, not videos, are resampled), and logs ``{stage}_auc_delong_low/high`` and
    ``{stage}_auc_boot_low/high`` for "val" after validation and for every other stage (the test splits) after
    testing. ``{stage}_auc`` itself is logged only with ``log_auc=True``, since ALNClassifier already logs it. A
    stage whose predictions hold a single class has no AUC: it is skipped with a warning.

    The bootstrap costs far more than DeLong (hundreds of AUCs, between training steps): for validation it runs
    on the last epoch only; earlier epochs log DeLong's CI alone (their boot columns stay empty). Test stages
    always get both.
    """

    def __init__(self, n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = 0.95, log_auc: bool = False):
        self.n_boot = n_boot
        self.seed = seed
        self.level = level
        self.log_auc = log_auc

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            last = trainer.max_epochs is None or trainer.current_epoch >= trainer.max_epochs - 1
            self._log_stage(pl_module, "val", bootstrap=last)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for stage in getattr(pl_module, "epoch_outputs", {}):
            if stage != "val":
                self._log_stage(pl_module, stage)

    def _log_stage(self, pl_module: L.LightningModule, stage: str, bootstrap: bool = True) -> None:
        gathered = getattr(pl_module, "gathered_outputs", None)
        outputs = gathered(stage) if gathered else getattr(pl_module, "epoch_outputs", {}).get(stage, [])
        labels, probs = patient_scores(outputs)
        try:
            delong = delong_ci(labels, probs, self.level)
            boot = bootstrap_auc_ci(labels, probs, self.n_boot, self.seed, self.level) if bootstrap else None
        except StatsInputError as error:
            rank_zero_warn(f"BootstrapAUC: no AUC confidence interval for {stage} this epoch (a single class, or "
                           f"fewer than 2 cases or controls): {error.problem}",
                           category=UserWarning)
            return
        values = {f"{stage}_auc_delong_low": delong.ci_low, f"{stage}_auc_delong_high": delong.ci_high}
        if boot is not None:
            values.update({f"{stage}_auc_boot_low": boot.ci_low, f"{stage}_auc_boot_high": boot.ci_high})
        if self.log_auc:
            values[f"{stage}_auc"] = delong.auc
        for name, value in values.items():
            pl_module.log(name, float(value), add_dataloader_idx=False, sync_dist=True)  # equal on every process


READERS = "readers"
"""`DeLongComparison` reference meaning the manifest's reader_<name> columns."""


class DeLongComparison(L.Callback):
    """Compares the model's per-patient predictions on each test split with a reference on the same patients.

    For each reference the paired DeLong test (pROC's ``roc.test``) of model minus reference: z, p and the CI of
    the AUC difference, logged and written atomically to ``comparison_<split>.json`` in ``out``. The reference is
    a predictions CSV (patient_id, label, prob[, split]: e.g. another run's ``predictions_<split>.csv``), a run
    folder of `alnvid fit` or `alnvid cv` (its predictions of the same split), or ``"readers"``: each sonographer
    of the manifest, scored by ``reader_<name>_score`` where given, else by the 0/1 calls ``reader_<name>``.

    Runs after testing (the (patient_id, label, prob, line) outputs of every test stage) and after each
    ``trainer.predict`` of a test split (the split named by the dataloader's manifest rows); under DDP on the
    outputs gathered from every process, and only the first process writes. A split the reference does not cover is skipped with a
    warning; with a ``manifest``, a reference that lacks some of a covered split's patients is refused up front.
    """

    def __init__(self, reference: str | Path, out: str | Path, *, manifest: Manifest | None = None,
                 level: float = 0.95):
        self.reference = str(reference)
        self.out = Path(out)
        self.level = level
        self.manifest = manifest
        self._csv = self._run_files = None
        self.results: dict[str, dict] = {}
        """The comparisons made so far, by split (what comparison_<split>.json holds)."""
        if self.reference == READERS:
            if manifest is None or not manifest.reader_names:
                raise AlnvidError("--compare-to readers needs reader_<name> columns in the manifest",
                                  path=None if manifest is None else manifest.path,
                                  fix="add the sonographers' reader_<name> (0/1) and reader_<name>_score columns, "
                                  "or compare to a run folder or predictions CSV.")
        elif Path(reference).is_dir():
            self._run_files = run_prediction_files(Path(reference))
        else:
            self._csv = load_predictions(reference)
        if manifest is not None:
            for split in manifest.test_splits:
                patients = patient_level(manifest.rows(split).assign(prob=0.0))  # the ids predictions will carry
                self.reference_scores(split, patients["patient_id"].to_numpy(str), patients["label"].to_numpy())

    def reference_scores(self, split: str, patient_ids: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Reference scores aligned with `patient_ids` by name (one per reader); {} when the reference holds none
        of the split's patients.

        Raises an AlnvidError naming the reference when it lacks some patients or disagrees on a label.
        """
        if self.reference == READERS:
            return self._reader_scores(split, patient_ids)
        if self._run_files is not None:
            if split not in self._run_files:
                return {}
            predictions = load_predictions(self._run_files[split])
        else:
            predictions = self._csv
            if predictions.split is not None:
                if split not in set(predictions.split):
                    return {}
                predictions = predictions.select_split(split)
        table = pd.DataFrame({"label": predictions.label, "prob": predictions.prob},
                             index=pd.Index(predictions.patient_id.astype(str)))
        if not table.index.isin(patient_ids).any():
            return {}
        self._check_patients(table.index, patient_ids, split, predictions.path)
        differ = table.loc[patient_ids, "label"].to_numpy() != np.asarray(labels).astype(int)
        if differ.any():
            raise AlnvidError(f"the reference disagrees on the label of {split} patient(s) "
                              f"{', '.join(patient_ids[differ][:5])}", path=predictions.path,
                              fix="compare to predictions made on the same cohort manifest.")
        return {Path(self.reference).name: table.loc[patient_ids, "prob"].to_numpy(float)}

    def _reader_scores(self, split: str, patient_ids: np.ndarray) -> dict[str, np.ndarray]:
        table = self.manifest.rows(split).drop_duplicates("patient_id").set_index("patient_id")
        scores = {}
        for name in self.manifest.reader_names:
            column = f"reader_{name}_score" if f"reader_{name}_score" in table.columns else f"reader_{name}"
            values = pd.to_numeric(table[column].replace("", np.nan), errors="coerce")
            if values.isna().all():
                continue  # this reader did not read this split
            self._check_patients(values.dropna().index, patient_ids, split, self.manifest.path, column)
            scores[name] = values.loc[patient_ids].to_numpy(float)
        return scores

    @staticmethod
    def _check_patients(have: pd.Index, wanted: np.ndarray, split: str, path, column: str | None = None) -> None:
        absent = [p for p in wanted if p not in have]
        if absent:
            where = f"{column} of " if column else ""
            raise AlnvidError(f"the reference {where}has no value for {len(absent)} of the {len(wanted)} {split} "
                              f"patient(s) (e.g. {absent[0]}); a paired comparison needs every one", path=path,
                              fix="give a reference scored on the same patients (the same manifest).")

    def compare(self, split: str, predictions: pd.DataFrame) -> dict | None:
        """Paired DeLong tests of per-patient `predictions` (patient_id, label, prob) against the reference on
        `split`; the result written to comparison_<split>.json, or None (with a warning) when not covered."""
        ids = predictions["patient_id"].astype(str).to_numpy()
        labels, probs = predictions["label"].to_numpy(int), predictions["prob"].to_numpy(float)
        try:
            references = self.reference_scores(split, ids, labels)
            tests = {name: delong_test(labels, probs, scores, self.level) for name, scores in references.items()}
        except AlnvidError as error:
            rank_zero_warn(f"DeLongComparison: {split} not compared with {self.reference}: {error.message}",
                           category=UserWarning)
            return None
        if not tests:
            rank_zero_warn(f"DeLongComparison: {self.reference} scores none of the {split} patients; not compared.",
                           category=UserWarning)
            return None
        result = {"split": split, "reference": self.reference, "n": int(labels.size),
                  "n_cases": int(labels.sum()), "n_controls": int((labels == 0).sum()),
                  "difference": "this model's AUC (auc1) minus the reference's (auc2)",
                  "comparisons": {name: test.to_dict() for name, test in tests.items()}}
        self.results[split] = result
        self._write(split, result)
        return result

    @rank_zero_only
    def _write(self, split: str, result: dict) -> None:
        atomic_write_text(self.out / f"comparison_{split}.json", json.dumps(result, indent=2))
        for name, test in result["comparisons"].items():
            rank_zero_info(f"{split}: model AUC {test['auc1']:.3f} vs {name} {test['auc2']:.3f}, DeLong "
                           f"z = {test['statistic']:.3f}, p = {test['p_value']:.4g}, difference "
                           f"{test['difference']:.3f} ({test['level']:.0%} CI {test['ci_low']:.3f} to "
                           f"{test['ci_high']:.3f})")

    def _log(self, trainer: L.Trainer, result: dict | None) -> None:
        if result is None:
            return
        metrics = {f"{result['split']}_delong_{key}_vs_{name}": test[field]
                   for name, test in result["comparisons"].items()
                   for key, field in (("z", "statistic"), ("p", "p_value"), ("auc_difference", "difference"))}
        for logger in trainer.loggers:
            logger.log_metrics(metrics)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        gathered = getattr(pl_module, "gathered_outputs", None)
        for stage in [s for s in getattr(pl_module, "epoch_outputs", {}) if s != "val"]:
            outputs = gathered(stage) if gathered else pl_module.epoch_outputs[stage]
            if outputs:
                rows = pd.DataFrame([o[:4] for o in outputs], columns=["patient_id", "label", "prob", "line"])
                self._log(trainer, self.compare(stage, patient_level(rows)))

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaders = trainer.predict_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        batches = trainer.predict_loop.predictions
        for loader, outputs in zip(loaders, batches if len(loaders) > 1 else [batches]):
            split = _test_split_of(loader)
            if split is not None:
                rows = gather_rows([row for batch in outputs for row in batch], key=lambda row: row["line"])
                if rows:
                    self._log(trainer, self.compare(split, patient_level(pd.DataFrame(rows))))


def _test_split_of(loader) -> str | None:
    """The test split whose manifest rows a dataloader serves, else None (training, validation, mixed rows)."""
    rows = getattr(loader.dataset, "rows", None)
    splits = set(rows["split"]) if isinstance(rows, pd.DataFrame) and "split" in rows.columns else set()
    return splits.pop() if len(splits) == 1 and not splits & set(TRAIN_SPLITS) else None


def run_prediction_files(folder: Path) -> dict[str, Path]:
    """Predictions CSV per split of a finished `alnvid fit` or `alnvid cv` run folder (the cv folder's are the best
    fold's)."""
    summary_file = next((f for f in (folder / "cv_summary.json", folder / "summary.json") if f.is_file()), None)
    if summary_file is None:
        raise AlnvidError("not a finished run folder (no summary.json or cv_summary.json)", path=folder,
                          fix="give a folder written by `alnvid fit` or `alnvid cv`, or a predictions CSV.")
    try:
        return {split: folder / rel for split, rel in json.loads(summary_file.read_text())["predictions"].items()}
    except (json.JSONDecodeError, KeyError, AttributeError) as error:
        raise AlnvidError(f"incomplete or foreign run summary ({type(error).__name__})", path=summary_file,
                          fix="rerun or --collect that run.") from None
