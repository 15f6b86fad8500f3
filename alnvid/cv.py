"""k-fold cross-validation as in the study: folds grouped by patient and stratified by label, the best fold
(by validation AUC) evaluated on every test split, plus the fold ensemble (mean probability of the k models).

Layout of `out`: fold_<k>/ is a complete `alnvid fit` run folder per fold; oof_predictions.csv holds the out-of-fold
validation predictions (split 'oof_selected' when each fold kept its best validation epoch, which makes them
optimistic; 'oof' with `trainer.selection='last'`, an unbiased estimate); predictions_<split>.csv the best fold's
test predictions; ensemble/predictions_<split>.csv the ensemble's (each with a per-video *_videos.csv beside it,
where the folds wrote them); cv_summary.json ties them together and names the run's test model
(`trainer.test_model`: the best fold, as in the study, or the ensemble), whose predictions comparisons and reports
use. A fold whose summary.json exists is finished and never retrained (its resume checkpoint, last.ckpt, is then
removed), so an interrupted `cv` resumes where it stopped, and folds can run as separate jobs (`fold=K`) and be
assembled later (`collect_cv`). With `parallel_folds=N`, N folds train at a time as separate processes on the same
device (`python -m alnvid.cv`, one fold each, logs in logs/fold_<k>.log); each fold's result is the one it gets
alone, as every fold is seeded on its own.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from alnvid.callbacks import DeLongComparison, FoldBookkeeping
from alnvid.config import TEST_MODELS, RunConfig, changed_result_settings
from alnvid.data.datamodule import ProgressFn
from alnvid.data.manifest import load_manifest
from alnvid.errors import AlnvidError
from alnvid.models.registry import check_consensus
from alnvid.runs import fold_folder, run_checkpoints
from alnvid.train import (
    Hardware,
    build_datamodule,
    build_module,
    build_module_shape,
    check_disk_space,
    check_inputs,
    detect_hardware,
    fit,
    is_global_zero,
    prediction_auc,
    read_predictions,
    resolve_auto,
    video_predictions_path,
)
from alnvid.utils import atomic_write_csv, atomic_write_text, quiet_libraries


@dataclass
class CVResult:
    out: Path
    fold_auc: dict[int, float]
    best_fold: int
    test_auc: dict[str, float]
    """The best fold's AUC per test split."""
    ensemble_auc: dict[str, float]
    comparisons: dict[str, dict] = field(default_factory=dict)
    """The test model's paired DeLong comparisons with `compare_to`, by test split (comparison_<split>.json)."""
    oof_auc: float = float("nan")
    selection: str = "best"
    """'best' (each fold's best validation epoch: the out-of-fold AUC is optimistic) or 'last' (unbiased)."""
    runtime: dict[str, Any] = field(default_factory=dict)
    """Device, precision, channels_last and workers the folds ran with (see alnvid.train.resolve_auto)."""
    test_model: str = "best_fold"
    """Whose test predictions are the run's: 'best_fold' or 'ensemble' (`TrainerConfig.test_model`)."""
    test_files: dict[str, Path] = field(default_factory=dict)
    """The run's test predictions per split (the best fold's or the ensemble's, as cv_summary.json lists them)."""

    @property
    def reported_auc(self) -> dict[str, float]:
        """AUC per test split of the run's test model."""
        return self.ensemble_auc if self.test_model == "ensemble" else self.test_auc


def check_fold_settings(folder: Path, expected: RunConfig) -> None:
    """Refuse to reuse or resume a fold trained with other result-changing settings (it would mix two protocols):
    every setting but where files go, speed and hardware (config.NEUTRAL_SETTINGS) must match."""
    differ = changed_result_settings(RunConfig.load(folder / "config.yaml"), expected)
    if differ:
        raise AlnvidError(f"this fold was trained with other settings ({', '.join(differ)})", path=folder,
                          fix="use a new --out for the new settings, or delete the fold folders to retrain them.")


GIB_PER_FOLD = 12
"""GPU memory set aside per concurrent fold when choosing `parallel_folds` automatically (an estimate for the
study's models at batch 4, T 16, 224 px, bf16 with headroom; benchmarks/gpu_check.sh prints the measured peaks)."""


def auto_parallel_folds(folds: int, hardware: Hardware) -> int:
    """Folds to train at a time: 1 on the CPU; on a GPU min(folds, 4, free GiB // 12, cores // 4), at least 1.

    Concurrent folds fill a GPU that one batch-4 fold leaves idle between kernel launches; 4 at most, with 4 cores
    each for their loaders. The rule is unmeasured: `--parallel-folds N` overrides it.
    """
    if not hardware.gpu:
        return 1
    return max(1, min(folds, 4, int(hardware.free_gib // GIB_PER_FOLD), hardware.cores // 4))


def run_cv(config: RunConfig, folds: int = 5, *, only_fold: int | None = None, progress: ProgressFn | None = None,
           on_fold_start=None, compare_to: str | Path | None = None,
           parallel_folds: int | None = 1) -> CVResult | None:
    """Train the folds that are not finished yet; assemble the result once every fold is done.

    With `only_fold`, train that fold alone and return None (assemble later with `collect_cv`). Under DDP
    every process trains the folds together, and only the first assembles them (the others return None). With
    `compare_to` (a run folder, a predictions CSV or "readers"), the test model's predictions are compared with
    it by DeLong's paired test into comparison_<split>.json (the reference is checked before any training).
    With `parallel_folds` N > 1, N folds train at a time in their own processes (None: `auto_parallel_folds`).
    """
    out = Path(config.out)
    if only_fold is not None and not 0 <= only_fold < folds:
        raise AlnvidError(f"--fold {only_fold} is outside 0..{folds - 1}", fix=f"give --fold 0 to {folds - 1}.")
    todo = [only_fold] if only_fold is not None else list(range(folds))
    check_consensus(config.model.name, config.model.consensus)
    # the folds must be formable before any fold folder is written
    manifest = load_manifest(config.data.manifest, folds=folds, allow_modalities=config.data.allow_modalities)
    config.data.manifest = str(manifest.path)
    comparison = DeLongComparison(compare_to, out, manifest=manifest) if compare_to else None
    hardware = detect_hardware(config.trainer.accelerator)
    if parallel_folds is None:
        parallel_folds = auto_parallel_folds(folds, hardware) if str(config.trainer.devices) == "1" else 1
    if parallel_folds < 1:
        raise AlnvidError(f"--parallel-folds is {parallel_folds}", fix="use 1 (one fold at a time) or more.")
    parallel_folds = 1 if only_fold is not None else min(parallel_folds, folds)
    if parallel_folds > 1 and str(config.trainer.devices) != "1":
        raise AlnvidError(f"--parallel-folds {parallel_folds} with --devices {config.trainer.devices}",
                          fix="use several devices per fold (DDP) or several folds at a time, not both.")
    resolve_auto(config, hardware, processes=parallel_folds)  # before finished folds' settings are compared
    waiting = []
    for fold in todo:
        folder = fold_folder(out, fold)
        fold_config = copy.deepcopy(config)
        fold_config.data.fold, fold_config.data.num_folds, fold_config.out = fold, folds, str(folder)
        fold_config.explain.export = False  # only the test model is explained, once all folds are in
        if (folder / "config.yaml").is_file():  # finished, or interrupted and about to resume
            check_fold_settings(folder, fold_config)
        if (folder / "summary.json").is_file():
            _drop_resume_checkpoint(folder)  # a fold that finished before cv removed it, or was stopped in between
            continue
        if parallel_folds > 1:
            waiting.append(fold)
            continue
        if on_fold_start:
            on_fold_start(fold, folds)
        fit(fold_config, resume=(folder / "checkpoints" / "last.ckpt").is_file(), progress=progress,
            extra_callbacks=[FoldBookkeeping(folder / "fold.json", fold, folds)])
        _drop_resume_checkpoint(folder)
    if waiting:  # check the disk and decode every file once here, before the fold processes start (and write)
        at_once = [fold_folder(out, fold) for fold in waiting[:parallel_folds]]
        room = partial(check_disk_space, out, runs=at_once, later=len(waiting) - len(at_once))
        room(build_module_shape(config))  # before the cache fill, which can take long
        check_inputs(build_datamodule(config, manifest, progress), config)
        room(build_module(config))  # again once the cache has taken its space; a bad --weights file fails here too
        _run_folds_in_processes(config, folds, waiting, parallel_folds, on_fold_start, hardware.cores)
    if only_fold is not None or not is_global_zero():
        return None  # one fold alone, or not the writing process of a multi-device run
    result = collect_cv(out, test_model=config.trainer.test_model)
    if comparison:
        for split in result.test_auc:
            comparison.compare(split, read_predictions(result.test_files[split]))
        result.comparisons = comparison.results
    if config.explain.export:
        explain_test_model(result, config)
    return result


def _run_folds_in_processes(config: RunConfig, folds: int, todo: list[int], processes: int, on_fold_start,
                            cores: int) -> None:
    """Train folds `todo`, `processes` at a time, each as `python -m alnvid.cv` (run_cv with one fold).

    Each process gets its share of the cores for PyTorch's threads (unless OMP_NUM_THREADS is set): N processes
    with all cores each would oversubscribe the CPU and stall on thread barriers.
    """
    out = Path(config.out)
    environment = {**os.environ}
    environment.setdefault("OMP_NUM_THREADS", str(max(1, cores // processes)))
    child = copy.deepcopy(config)
    child.trainer.progress = False
    child.save(out / "logs" / "cv_config.yaml")
    running: dict[int, tuple[subprocess.Popen, Path]] = {}
    failed: list[tuple[int, int, Path]] = []
    try:
        while todo or running:
            while todo and len(running) < processes:
                fold = todo.pop(0)
                if on_fold_start:
                    on_fold_start(fold, folds)
                log = out / "logs" / f"fold_{fold}.log"
                with log.open("w") as stream:
                    command = [sys.executable, "-m", "alnvid.cv", str(out / "logs" / "cv_config.yaml"), str(folds),
                               str(fold)]
                    running[fold] = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT,
                                                     env=environment), log
            time.sleep(0.5)
            for fold, (process, log) in list(running.items()):
                if process.poll() is not None:
                    del running[fold]
                    if process.returncode:
                        failed.append((fold, process.returncode, log))
    finally:
        for process, _ in running.values():  # interrupted: stop the other folds (they resume from last.ckpt)
            process.terminate()
            process.wait()
    if failed:
        fold, code, log = failed[0]
        raise AlnvidError(f"fold {fold} failed (exit code {code}; {len(failed)} fold(s) failed in all)", path=log,
                          fix="read the end of that log; rerun the same command to resume (finished folds are kept).")


def _drop_resume_checkpoint(folder: Path) -> None:
    """Remove a finished fold's last.ckpt, unless it is the fold's model: it serves only resume, which a finished
    fold never needs, and holds the optimizer's state too (3 times best.ckpt's size)."""
    last = folder / "checkpoints" / "last.ckpt"
    if is_global_zero() and last.is_file():
        if json.loads((folder / "summary.json").read_text()).get("best_checkpoint") != "checkpoints/last.ckpt":
            last.unlink()


def _fold_mean(tables: list[pd.DataFrame], by: str) -> pd.DataFrame:
    """The fold ensemble's predictions: each `by` key's probability averaged over the folds' tables, its other
    columns as the first fold has them, in the tables' column order."""
    together = pd.concat(tables)
    columns = {column: "mean" if column == "prob" else "first" for column in together.columns if column != by}
    return together.groupby(by, sort=False).agg(columns).reset_index()[list(together.columns)]


def _collect_videos(out: Path, summaries: dict, split: str, targets: dict) -> None:
    """Write each `targets` file's per-video twin (`video_predictions_path`) from the folds' per-video predictions
    of `split`, e.g. the ensemble's mean per manifest line; nothing where a fold predates those files."""
    paths = [video_predictions_path(fold_folder(out, k) / f"predictions_{split}.csv") for k in summaries]
    if not all(path.is_file() for path in paths):
        for target in targets:  # none from an earlier collection may outlive the folds that made it
            video_predictions_path(out / target).unlink(missing_ok=True)
        return
    tables = [read_predictions(path) for path in paths]
    for target, combine in targets.items():
        atomic_write_csv(combine(tables), video_predictions_path(out / target))


def explain_test_model(result: CVResult, config: RunConfig) -> None:
    """Grad-CAM of the test sets' telling cases with the run's test model (the best fold, or the fold ensemble:
    the mean of the folds' heatmaps), into <cv folder>/gradcam/.

    A split whose index.csv exists was exported by an earlier (interrupted) run and is kept.
    """
    from alnvid.explain.export import GradCAMExport
    from alnvid.models.trained import load_models

    model = load_models(run_checkpoints(result.out))
    manifest = load_manifest(config.data.manifest, allow_modalities=config.data.allow_modalities)
    exporter = GradCAMExport(result.out / "gradcam", model.config, top_n=config.explain.top_n, gif=config.explain.gif)
    for split in manifest.test_splits:
        if not (result.out / "gradcam" / split / "index.csv").is_file():
            exporter.export_model(model, _with_test_probabilities(manifest.rows(split), result.test_files.get(split)),
                                  split)


def _with_test_probabilities(rows: pd.DataFrame, predictions: Path | None) -> pd.DataFrame:
    """The split's rows with the run's own test probabilities as `prob`, so that the Grad-CAM export need not
    predict every video again: each video's from the per-video file beside `predictions`, else, where each
    patient has one video, the patient's. Rows stay without `prob` (to be predicted) where neither covers them."""
    if predictions is None:
        return rows
    videos = video_predictions_path(predictions)
    if videos.is_file():
        probs = read_predictions(videos).set_index("line")["prob"]
        key = rows["line"]
    elif predictions.is_file() and not rows["patient_id"].duplicated().any():
        probs = read_predictions(predictions).set_index("patient_id")["prob"]
        key = rows["patient_id"].astype(str)
    else:
        return rows
    if not key.isin(probs.index).all():
        return rows
    return rows.assign(prob=key.map(probs).to_numpy())


OOF_NOTES = {
    "best": "optimistic: each fold's model is the epoch of best AUC on the very validation patients it then scores "
            "(rerun with --selection last for an unbiased estimate)",
    "last": "unbiased: each fold's model is its last epoch, a count fixed before training",
}


TEST_MODEL_NOTES = {
    "best_fold": "test predictions of the best fold by validation AUC (the study's rule)",
    "ensemble": "test predictions of the fold ensemble (mean probability of every fold's model)",
}


def oof_split_name(selection: str) -> str:
    """The out-of-fold predictions' split name: 'oof_selected' where folds selected their epoch on those patients."""
    return "oof_selected" if selection == "best" else "oof"


def collect_cv(out: str | Path, test_model: str | None = None) -> CVResult:
    """Assemble finished folds: out-of-fold predictions, best fold, fold ensemble, cv_summary.json.

    `test_model` ('best_fold' or 'ensemble') picks whose test predictions are the run's; None keeps the one the
    folds were trained with (their config.yaml)."""
    out = Path(out)
    states = [json.loads(p.read_text()) for p in out.glob("fold_*/fold.json") if re.fullmatch(r"fold_\d+", p.parent.name)]
    if not states:
        raise AlnvidError("no cross-validation folds here", path=out, fix="run `alnvid cv --out` with this folder first.")
    counts = {state["num_folds"] for state in states}
    if len(counts) > 1:
        raise AlnvidError(f"the folds here come from different fold counts ({sorted(counts)})", path=out,
                          fix="keep one cross-validation per folder: move the stray fold folders away.")
    num_folds = counts.pop()
    summaries = {}
    for k in range(num_folds):
        file = fold_folder(out, k) / "summary.json"
        if file.is_file():
            summaries[k] = json.loads(file.read_text())
    missing = [k for k in range(num_folds) if k not in summaries]
    if missing:
        raise AlnvidError(f"fold(s) {', '.join(map(str, missing))} of {num_folds} not finished", path=out,
                          fix="run `alnvid cv --fold K` for each (or `alnvid cv` without --fold to run them all).")

    selections = {s.get("selection", "best") for s in summaries.values()}
    if len(selections) > 1:
        raise AlnvidError(f"the folds here used different model selections ({', '.join(sorted(selections))})",
                          path=out, fix="retrain the odd folds with the same --selection.")
    selection = selections.pop()
    if test_model is None:
        test_model = RunConfig.load(fold_folder(out, min(summaries)) / "config.yaml").trainer.test_model
    if test_model not in TEST_MODELS:
        raise AlnvidError(f"unknown test model {test_model!r}", fix=f"use one of: {', '.join(TEST_MODELS)}.")
    oof_split = oof_split_name(selection)
    oof = pd.concat([read_predictions(fold_folder(out, k) / "predictions_val.csv").assign(fold=k) for k in summaries])
    fold_auc = {k: float(s["val_auc"]) for k, s in summaries.items()}
    best_fold = max(fold_auc, key=lambda k: (fold_auc[k], -k))
    model = summaries[best_fold]["model"]
    predictions = {oof_split: "oof_predictions.csv"}
    atomic_write_csv(oof.assign(split=oof_split), out / "oof_predictions.csv")
    _collect_videos(out, summaries, "val", {"oof_predictions.csv": lambda tables: pd.concat(
        [table.assign(fold=k) for k, table in zip(summaries, tables)]).assign(split=oof_split)})
    test_splits = [s for s in summaries[best_fold]["predictions"] if s != "val"]
    test_auc, ensemble_auc, ensemble = {}, {}, {}
    for split in test_splits:
        per_fold = [read_predictions(fold_folder(out, k) / f"predictions_{split}.csv") for k in summaries]
        best = per_fold[list(summaries).index(best_fold)]
        atomic_write_csv(best, out / f"predictions_{split}.csv")
        mean = _fold_mean(per_fold, by="patient_id")
        atomic_write_csv(mean, out / "ensemble" / f"predictions_{split}.csv")
        _collect_videos(out, summaries, split, {
            f"predictions_{split}.csv": lambda tables: tables[list(summaries).index(best_fold)],
            f"ensemble/predictions_{split}.csv": lambda tables: _fold_mean(tables, by="line")})
        ensemble[split] = f"ensemble/predictions_{split}.csv"
        predictions[split] = ensemble[split] if test_model == "ensemble" else f"predictions_{split}.csv"
        test_auc[split] = prediction_auc(best)
        ensemble_auc[split] = prediction_auc(mean)
    summary = {
        "model": model,
        "num_folds": num_folds,
        "folds_done": sorted(summaries),
        "fold_val_auc": {str(k): v for k, v in fold_auc.items()},
        "oof_auc": prediction_auc(oof),
        "oof_selection": selection,
        "oof_optimistic": selection == "best",
        "oof_note": OOF_NOTES[selection],
        "best_fold": best_fold,
        "best_checkpoint": f"fold_{best_fold}/{summaries[best_fold]['best_checkpoint']}",
        "test_model": test_model,
        "selection": TEST_MODEL_NOTES[test_model],
        "test_auc": test_auc,
        "ensemble_test_auc": ensemble_auc,
        "predictions": predictions,
        "ensemble_predictions": ensemble,
        "runtime": summaries[best_fold].get("runtime", {}),
    }
    atomic_write_text(out / "cv_summary.json", json.dumps(summary, indent=2))
    return CVResult(out, fold_auc, best_fold, test_auc, ensemble_auc, oof_auc=summary["oof_auc"], selection=selection,
                    runtime=summary["runtime"], test_model=test_model,
                    test_files={split: out / predictions[split] for split in test_splits})



if __name__ == "__main__":  # one fold of a parallel cross-validation: python -m alnvid.cv CONFIG FOLDS FOLD
    quiet_libraries()  # as the command line does: the fold's log keeps errors, not known harmless warnings
    run_cv(RunConfig.load(sys.argv[1]), int(sys.argv[2]), only_fold=int(sys.argv[3]))
