"""Model-against-model and model-against-reader comparisons on the same test patients (the study's Tables 2-3).

Video models are compared with static models by DeLong's paired test on each test split (unpaired, and said
so, when the patient sets differ) and on all test splits pooled ("pooled test"), with Holm's correction across
the pairs of a split, and McNemar's test on accuracy (correct calls), sensitivity (calls among cases) and
specificity (calls among controls). DeLong's one-sided p (A better than B) is kept beside the two-sided one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alnvid.data.manifest import reader_names, split_order
from alnvid.errors import AlnvidError, StatsInputError
from alnvid.io.table import read_csv_table
from alnvid.runs import RunRecord
from alnvid.stats import (
    STUDY_THRESHOLD,
    Comparison,
    DiagnosticMetrics,
    McNemarResult,
    Predictions,
    PredictionSummary,
    compare_predictions,
    decision_metrics,
    load_predictions,
    mcnemar,
    summarize_predictions,
)
from alnvid.stats.predictions import ReaderCalls

EVALUATED_SPLITS = ("val", "oof", "oof_selected")
"""Prediction sets that are not test splits: never compared across models."""
POOLED = "pooled test"
"""The comparison on every test split's patients together (more power than each split alone)."""


@dataclass
class PairResult:
    """Model A against model B on one test split."""

    split: str
    run_a: str
    run_b: str
    comparison: Comparison
    p_holm: float
    mcnemar_accuracy: McNemarResult | None
    mcnemar_sensitivity: McNemarResult | None
    mcnemar_specificity: McNemarResult | None

    def to_dict(self) -> dict:
        def test(result: McNemarResult | None):
            return None if result is None else result.to_dict()

        return {"split": self.split, "run_a": self.run_a, "run_b": self.run_b, **self.comparison.to_dict(),
                "p_holm": self.p_holm, "mcnemar_accuracy": test(self.mcnemar_accuracy),
                "mcnemar_sensitivity": test(self.mcnemar_sensitivity),
                "mcnemar_specificity": test(self.mcnemar_specificity)}


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p values (step-down, monotone, capped at 1)."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p_values[index])
        adjusted[index] = min(1.0, running)
    return adjusted.tolist()


def select_runs(runs: list[RunRecord], selector: str) -> list[RunRecord]:
    """Runs named by `selector`: a model family ('video', 'static'), a model name, or a run folder name."""
    chosen = [r for r in runs if selector in (r.kind, r.model, r.name)]
    if not chosen:
        names = ", ".join(f"{r.name} ({r.model}, {r.kind})" for r in runs)
        raise AlnvidError(f"no run matches '{selector}'; runs found: {names}",
                          fix="use video, static, a model name or a run folder name.")
    return chosen


@dataclass
class RunComparisons:
    """The pairs compared, and the splits that could not be compared with the reason."""

    pairs: list[PairResult]
    skipped: dict[str, str]


def compare_runs(group_a: list[RunRecord], group_b: list[RunRecord], *, n_boot: int = 2000, seed: int = 0,
                 threshold: float = STUDY_THRESHOLD) -> RunComparisons:
    """Every run of group A against every run of group B on every test split both evaluated.

    A split too small for DeLong's variance (fewer than 2 cases or 2 controls) is skipped, with the reason.
    """
    results: list[PairResult] = []
    skipped: dict[str, str] = {}
    for split in _test_splits(group_a + group_b):
        pairs = [(a, b) for a in group_a for b in group_b
                 if a.folder != b.folder and split in a.prediction_files and split in b.prediction_files]
        comparisons = []
        try:
            for a, b in pairs:
                pred_a = load_predictions(a.prediction_files[split])
                pred_b = load_predictions(b.prediction_files[split])
                comparisons.append((a, b, compare_predictions(pred_a, pred_b, n_boot, seed, threshold)))
        except StatsInputError as error:
            skipped[split] = error.problem
            continue
        for a, b, comparison in comparisons:
            results.append(PairResult(split, a.name, b.name, comparison, float("nan"),
                                      *_mcnemar_triplet(comparison, threshold)))
    for a in group_a:
        for b in group_b:
            splits = [s for s in _test_splits([a]) if s in b.prediction_files]
            if a.folder == b.folder or len(splits) < 2:
                continue
            try:
                comparison = compare_predictions(pooled_predictions(a, splits), pooled_predictions(b, splits),
                                                 n_boot, seed, threshold)
            except StatsInputError as error:
                skipped[POOLED] = error.problem
                continue
            results.append(PairResult(POOLED, a.name, b.name, comparison, float("nan"),
                                      *_mcnemar_triplet(comparison, threshold)))
    return RunComparisons(adjust_holm(results), skipped)


def pooled_predictions(run: RunRecord, splits: list[str]) -> Predictions:
    """A run's predictions on several test splits as one set (a patient is never in two splits)."""
    parts = [load_predictions(run.prediction_files[split]) for split in splits]
    ids = np.concatenate([p.patient_id for p in parts])
    if len(set(ids)) < len(ids):
        raise StatsInputError(f"run {run.name} has patients in more than one of {', '.join(splits)}",
                              fix="keep each patient in one split.")
    return Predictions(" + ".join(str(p.path) for p in parts), ids, np.concatenate([p.label for p in parts]),
                       np.concatenate([p.prob for p in parts]),
                       np.concatenate([np.full(p.n, split) for p, split in zip(parts, splits)]), {})


def adjust_holm(pairs: list[PairResult]) -> list[PairResult]:
    """Set each pair's Holm-adjusted DeLong p value over all pairs of its split (the family of tests)."""
    for split in {p.split for p in pairs}:
        family = [p for p in pairs if p.split == split]
        for pair, p_holm in zip(family, holm([p.comparison.delong.p_value for p in family])):
            pair.p_holm = p_holm
    return pairs


def _mcnemar_triplet(comparison: Comparison, threshold: float):
    if not comparison.paired:
        return None, None, None
    label = comparison.a.label
    calls_a = (comparison.a.prob >= threshold).astype(int)
    calls_b = (comparison.b.prob >= threshold).astype(int)
    cases, controls = label == 1, label == 0
    return (mcnemar((calls_a == label).astype(int), (calls_b == label).astype(int)),
            mcnemar(calls_a[cases], calls_b[cases]),
            mcnemar(calls_a[controls], calls_b[controls]))


def _test_splits(runs: list[RunRecord]) -> list[str]:
    splits = {s for r in runs for s in r.prediction_files if s not in EVALUATED_SPLITS}
    return sorted(splits)


def model_with_readers(run: RunRecord, readers: pd.DataFrame, split: str) -> Predictions:
    """The run's predictions on `split` joined with the readers' calls (reader_<name>, reader_<name>_score)."""
    if split not in run.prediction_files:
        raise AlnvidError(f"run {run.name} has no predictions for split '{split}'", path=run.folder)
    return join_readers(load_predictions(run.prediction_files[split]), readers, split)


def join_readers(model: Predictions, readers: pd.DataFrame, split: str) -> Predictions:
    """`model`'s patients with the readers' calls (reader_<name>, reader_<name>_score) of `readers`, in its order;
    `split` names the patients in errors."""
    names = reader_names(readers.columns)
    if not names:
        raise AlnvidError("no reader_<name> columns with sonographers' calls",
                          fix="add reader_<name> (0/1) and optionally reader_<name>_score columns per patient.")
    table = readers.drop_duplicates("patient_id").set_index("patient_id")
    absent = [p for p in model.patient_id if p not in table.index]
    if absent:
        raise AlnvidError(f"{len(absent)} patient(s) of {split} are not in the readers table (e.g. {absent[0]})",
                          fix=f"give every {split} patient's reader calls, or compare on the split that has them.")
    table = table.loc[model.patient_id]
    calls = {}
    for name in names:
        decision = _reader_column(table, f"reader_{name}", split, allowed={0.0, 1.0})
        score_column = f"reader_{name}_score"
        score = _reader_column(table, score_column, split) if score_column in table.columns else None
        calls[name] = ReaderCalls(name, decision.astype(int), score)
    return Predictions(model.path, model.patient_id, model.label, model.prob, model.split, calls, model.scores)


def _reader_column(table: pd.DataFrame, column: str, split: str, allowed: set[float] | None = None) -> np.ndarray:
    """A reader column as numbers; empty or non-numeric cells (or calls other than 0/1) are named in the error."""
    values = pd.to_numeric(table[column].replace("", np.nan), errors="coerce")
    bad = values.isna() | (~values.isin(allowed) if allowed else False)
    if bad.any():
        examples = ", ".join(f"{pid}: {table[column][pid]!r}" for pid in values.index[bad][:3])
        expected = "0 or 1" if allowed else "a number"
        raise AlnvidError(f"{column} must be {expected} for every {split} patient ({int(bad.sum())} are not: "
                          f"{examples})", fix=f"fill in {column} for those patients.")
    return values.to_numpy(dtype=float)


def compare_with_readers(run: RunRecord, readers: pd.DataFrame, split: str, *, n_boot: int = 2000,
                         seed: int = 0) -> PredictionSummary:
    """Each reader's metrics and AUC, the model against each reader, and agreement between readers."""
    return summarize_predictions(model_with_readers(run, readers, split), n_boot, seed)


def readers_table(manifest: str | Path) -> pd.DataFrame:
    """patient_id and reader columns of a manifest (or any CSV with those columns)."""
    path = Path(manifest)
    table = read_csv_table(path, "readers", dtype=str, keep_default_na=False)
    if "patient_id" not in table.columns:
        raise AlnvidError("no patient_id column", path=path, fix="the readers CSV needs patient_id.")
    return table[["patient_id", *[c for c in table.columns if c.startswith("reader_")]]]


@dataclass(frozen=True)
class ReaderAccuracy:
    """A reader's calls against the labels on one split (or on all the patients it read: split 'all')."""

    reader: str
    split: str
    metrics: DiagnosticMetrics

    def to_dict(self) -> dict:
        return {"reader": self.reader, "split": self.split, **self.metrics.to_dict()}


def reader_accuracy(table: pd.DataFrame) -> list[ReaderAccuracy]:
    """Each reader's sensitivity, specificity, ... per patient (its first row) of a manifest table, on every split
    where it called patients, and on all of them when that is several splits: the metrics and exact CIs of the
    report's Table 3. Rows without a 0/1 call or label are not counted."""
    patients = table.drop_duplicates("patient_id")
    results = []
    for name in reader_names(patients.columns):
        calls = pd.to_numeric(patients[f"reader_{name}"].replace("", np.nan), errors="coerce")
        labels = pd.to_numeric(patients["label"], errors="coerce")
        read = calls.isin([0, 1]) & labels.isin([0, 1])
        splits = sorted(patients.loc[read, "split"].unique(), key=split_order)
        groups = [(split, read & (patients["split"] == split)) for split in splits]
        for split, rows in groups + ([("all", read)] if len(groups) > 1 else []):
            results.append(ReaderAccuracy(name, split, decision_metrics(labels[rows].astype(int),
                                                                        calls[rows].astype(int))))
    return results
