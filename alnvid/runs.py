"""Reading finished run folders (`alnvid fit` or `alnvid cv`) for comparisons and reports."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from alnvid.errors import AlnvidError
from alnvid.models.registry import get_model_spec
from alnvid.train import read_predictions


def fold_folder(out: Path, fold: int) -> Path:
    """Where fold `fold` of a cross-validation in `out` lives."""
    return out / f"fold_{fold}"


def fold_checkpoint(out: Path, fold: int) -> Path:
    """The selected model of fold `fold` of a cross-validation in `out` (what `fit` writes as best.ckpt)."""
    return fold_folder(out, fold) / "checkpoints" / "best.ckpt"


@dataclass
class RunRecord:
    """One model's results: predictions per split, training history and provenance."""

    folder: Path
    name: str
    model: str
    kind: str
    """'video' or 'static' (the registry's family of the model)."""
    predictions: dict[str, pd.DataFrame]
    prediction_files: dict[str, Path]
    epochs: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Per-epoch history, one table per fold (or 'fit' for a single run)."""
    summary: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    config: str = ""


def load_run(folder: str | Path) -> RunRecord:
    """A run folder with summary.json (one fit) or cv_summary.json (cross-validation)."""
    folder = Path(folder)
    cv_file, fit_file = folder / "cv_summary.json", folder / "summary.json"
    summary_file = cv_file if cv_file.is_file() else fit_file
    if not summary_file.is_file():
        raise AlnvidError("not a finished run folder (no summary.json or cv_summary.json)", path=folder,
                          fix="give a folder written by `alnvid fit` or `alnvid cv` (finish or --collect it first).")
    try:
        summary = json.loads(summary_file.read_text())
        prediction_files = {split: folder / rel for split, rel in summary["predictions"].items()}
        predictions = {split: read_predictions(path) for split, path in prediction_files.items()}
        model = summary["model"]
    except (json.JSONDecodeError, KeyError, OSError) as error:
        raise AlnvidError(f"incomplete or foreign run folder ({type(error).__name__}: {error})", path=summary_file,
                          fix="rerun or --collect the run; do not edit its files by hand.") from None
    if summary_file == cv_file:
        folds = {k: fold_folder(folder, k) for k in summary["folds_done"]}
        epochs = {f"fold {k}": pd.read_csv(f / "epochs.csv") for k, f in folds.items() if (f / "epochs.csv").is_file()}
        provenance_file = fold_folder(folder, summary["best_fold"]) / "provenance.json"
        config_file = fold_folder(folder, summary["best_fold"]) / "config.yaml"
    else:
        epochs = {"fit": pd.read_csv(folder / "epochs.csv")} if (folder / "epochs.csv").is_file() else {}
        provenance_file, config_file = folder / "provenance.json", folder / "config.yaml"
    return RunRecord(
        folder=folder,
        name=folder.name,
        model=model,
        kind=get_model_spec(model).kind,
        predictions=predictions,
        prediction_files=prediction_files,
        epochs=epochs,
        summary=summary,
        provenance=json.loads(provenance_file.read_text()) if provenance_file.is_file() else {},
        config=config_file.read_text() if config_file.is_file() else "",
    )


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` holds a finished fit (summary.json) or cross-validation (cv_summary.json)."""
    return (folder / "summary.json").is_file() or (folder / "cv_summary.json").is_file()


def run_checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoints of a finished run's test model: a fit's best.ckpt; a cross-validation's best fold's, or
    with `test_model` 'ensemble' every fold's (used together as `ModelEnsemble`)."""
    record = load_run(folder)
    if "num_folds" in record.summary and record.summary.get("test_model") == "ensemble":
        return [fold_checkpoint(record.folder, k) for k in record.summary["folds_done"]]
    return [record.folder / record.summary["best_checkpoint"]]


def find_runs(root: str | Path) -> list[RunRecord]:
    """Every finished run directly under `root`, sorted by name; `root` alone if it is itself a run."""
    root = Path(root)
    if not root.is_dir():
        raise AlnvidError("runs folder not found", path=root, fix="give the folder that holds your run folders.")
    if is_run_folder(root):
        return [load_run(root)]  # a CV folder's fold_k runs are part of it, not models of their own
    candidates = sorted(p for p in root.iterdir() if p.is_dir())
    runs = [load_run(p) for p in candidates if is_run_folder(p)]
    if not runs:
        raise AlnvidError("no finished runs found", path=root, fix="run `alnvid cv` or `alnvid fit` with --out here.")
    return runs
