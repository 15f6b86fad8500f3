"""k-fold cross-validation as in the study: folds grouped by patient and stratified by label, the best fold
(by validation AUC) evaluated on every test split, plus the fold ensemble (mean probability of the k models).

Layout of `out`: fold_<k>/ is a complete `alnvid fit` run folder per fold; oof_predictions.csv holds the
out-of-fold validation predictions; predictions_<split>.csv the best fold's test predictions;
ensemble/predictions_<split>.csv the ensemble's; cv_summary.json ties them together. A fold whose
summary.json exists is finished and never retrained, so an interrupted `cv` resumes where it stopped, and
folds can run as separate jobs (`fold=K`) and be assembled later (`collect_cv`).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from alnvid.callbacks import FoldBookkeeping
from alnvid.config import RunConfig
from alnvid.data.datamodule import ProgressFn
from alnvid.errors import AlnvidError
from alnvid.train import fit, prediction_auc
from alnvid.utils import atomic_path, atomic_write_text


@dataclass
class CVResult:
    out: Path
    fold_auc: dict[int, float]
    best_fold: int
    test_auc: dict[str, float]
    ensemble_auc: dict[str, float]


def fold_folder(out: Path, fold: int) -> Path:
    return out / f"fold_{fold}"


def run_cv(config: RunConfig, folds: int = 5, *, only_fold: int | None = None, progress: ProgressFn | None = None,
           on_fold_start=None) -> CVResult | None:
    """Train the folds that are not finished yet; assemble the result once every fold is done.

    With `only_fold`, train that fold alone and return None (assemble later with `collect_cv`).
    """
    out = Path(config.out)
    todo = [only_fold] if only_fold is not None else list(range(folds))
    for fold in todo:
        folder = fold_folder(out, fold)
        if (folder / "summary.json").is_file():
            continue
        if on_fold_start:
            on_fold_start(fold, folds)
        fold_config = copy.deepcopy(config)
        fold_config.data.fold, fold_config.data.num_folds, fold_config.out = fold, folds, str(folder)
        fold_config.explain.export = False  # only the selected fold is explained, once all folds are in
        fit(fold_config, resume=(folder / "checkpoints" / "last.ckpt").is_file(), progress=progress,
            extra_callbacks=[FoldBookkeeping(folder / "fold.json", fold, folds)])
    if only_fold is not None:
        return None
    result = collect_cv(out)
    if config.explain.export:
        explain_best_fold(result, config)
    return result


def explain_best_fold(result: CVResult, config: RunConfig) -> None:
    """Grad-CAM of the test sets' telling cases with the selected fold's model, into <cv folder>/gradcam/.

    A split whose index.csv exists was exported by an earlier (interrupted) run and is kept.
    """
    from alnvid.data.manifest import load_manifest
    from alnvid.explain.export import GradCAMExport
    from alnvid.inference import load_trained

    model = load_trained(fold_folder(result.out, result.best_fold) / "checkpoints" / "best.ckpt")
    manifest = load_manifest(config.data.manifest)
    exporter = GradCAMExport(result.out / "gradcam", model.config, top_n=config.explain.top_n,
                             gif=config.explain.gif)
    for split in manifest.test_splits:
        if not (result.out / "gradcam" / split / "index.csv").is_file():
            exporter.export(model.module, manifest.rows(split), split)


def collect_cv(out: str | Path) -> CVResult:
    """Assemble finished folds: out-of-fold predictions, best fold, fold ensemble, cv_summary.json."""
    out = Path(out)
    folders = sorted(out.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    if not folders:
        raise AlnvidError("no fold_* folders here", path=out, fix="run `alnvid cv --out` with this folder first.")
    num_folds = json.loads((folders[0] / "fold.json").read_text())["num_folds"]
    summaries = {}
    for k in range(num_folds):
        file = fold_folder(out, k) / "summary.json"
        if file.is_file():
            summaries[k] = json.loads(file.read_text())
    missing = [k for k in range(num_folds) if k not in summaries]
    if missing:
        raise AlnvidError(f"fold(s) {', '.join(map(str, missing))} of {num_folds} not finished", path=out,
                          fix="run `alnvid cv --fold K` for each (or `alnvid cv` without --fold to run them all).")

    oof = pd.concat([pd.read_csv(fold_folder(out, k) / "predictions_val.csv").assign(fold=k) for k in summaries])
    fold_auc = {k: float(s["val_auc"]) for k, s in summaries.items()}
    best_fold = max(fold_auc, key=lambda k: (fold_auc[k], -k))
    model = summaries[best_fold]["model"]
    predictions = {"oof": "oof_predictions.csv"}
    _write_csv(oof.assign(split="oof"), out / "oof_predictions.csv")
    test_splits = [s for s in summaries[best_fold]["predictions"] if s != "val"]
    test_auc, ensemble_auc, ensemble = {}, {}, {}
    for split in test_splits:
        per_fold = [pd.read_csv(fold_folder(out, k) / f"predictions_{split}.csv") for k in summaries]
        best = per_fold[list(summaries).index(best_fold)]
        _write_csv(best, out / f"predictions_{split}.csv")
        predictions[split] = f"predictions_{split}.csv"
        mean = pd.concat(per_fold).groupby("patient_id", sort=False).agg(
            label=("label", "first"), prob=("prob", "mean"), split=("split", "first")).reset_index()
        _write_csv(mean, out / "ensemble" / f"predictions_{split}.csv")
        ensemble[split] = f"ensemble/predictions_{split}.csv"
        test_auc[split] = prediction_auc(best)
        ensemble_auc[split] = prediction_auc(mean)
    summary = {
        "model": model,
        "num_folds": num_folds,
        "folds_done": sorted(summaries),
        "fold_val_auc": {str(k): v for k, v in fold_auc.items()},
        "oof_auc": prediction_auc(oof),
        "best_fold": best_fold,
        "best_checkpoint": f"fold_{best_fold}/{summaries[best_fold]['best_checkpoint']}",
        "selection": "best fold by validation AUC (the study's rule)",
        "test_auc": test_auc,
        "ensemble_test_auc": ensemble_auc,
        "predictions": predictions,
        "ensemble_predictions": ensemble,
    }
    atomic_write_text(out / "cv_summary.json", json.dumps(summary, indent=2))
    return CVResult(out, fold_auc, best_fold, test_auc, ensemble_auc)


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)

