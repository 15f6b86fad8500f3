"""Per-patient prediction CSVs: load, summarise with every CI, and compare two of them.

CSV columns: ``patient_id``, ``label`` (0/1), ``prob`` (higher = more likely metastatic; the study
calls a patient positive at ``prob >= 0.5``); optional ``split``; optional ``reader_<name>`` (0/1
calls of a sonographer) and ``reader_<name>_score`` (that reader's ordinal or continuous score).

``prob`` must be a probability in [0, 1] unless the scores are declared ranks or logits (``scores``): a
0–100 scale read as probabilities would call every patient positive at 0.5. Ranks, logits and other scores
get the threshold-free statistics only (AUC, AP, Youden point on their own scale), never a 0.5 threshold,
unless a threshold on their scale is given.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd

from alnvid.errors import AlnvidError, StatsInputError
from alnvid.io.table import read_csv_table
from alnvid.stats.agreement import (
    FleissKappaResult,
    KappaResult,
    McNemarResult,
    cohen_kappa,
    fleiss_kappa,
    mcnemar,
)
from alnvid.stats.bootstrap import (
    DEFAULT_N_BOOT,
    BootstrapCI,
    BootstrapTest,
    bootstrap_auc_ci,
    bootstrap_test,
    bootstrap_test_unpaired,
)
from alnvid.stats.delong import (
    AucCI,
    AucTest,
    delong_ci,
    delong_test,
    delong_test_unpaired,
)
from alnvid.stats.metrics import (
    CIMethod,
    DiagnosticMetrics,
    decision_metrics,
    diagnostic_metrics,
)
from alnvid.stats.roc import (
    STUDY_THRESHOLD,
    OperatingPoint,
    auc,
    average_precision,
    youden_point,
)

REQUIRED_COLUMNS = ("patient_id", "label", "prob")
ScoreKind = Literal["probability", "rank", "logit", "score"]
"""What a `prob` column holds; "score" is any other scale where higher means more likely metastatic."""
SCORE_KINDS: tuple[str, ...] = get_args(ScoreKind)


@dataclass(frozen=True)
class ReaderCalls:
    """One reader's 0/1 calls and, if given, scores, aligned with the predictions' patients."""

    name: str
    decision: np.ndarray
    score: np.ndarray | None


@dataclass(frozen=True)
class Predictions:
    """A model's per-patient predictions (and readers' calls) from one CSV."""

    path: str
    patient_id: np.ndarray
    label: np.ndarray
    prob: np.ndarray
    split: np.ndarray | None
    readers: dict[str, ReaderCalls]
    scores: ScoreKind = "probability"
    """What `prob` holds: probabilities in [0, 1], or ranks/logits (no 0.5 threshold applies to those)."""

    @property
    def n(self) -> int:
        return int(self.label.size)

    @property
    def n_cases(self) -> int:
        return int(self.label.sum())

    @property
    def n_controls(self) -> int:
        return self.n - self.n_cases

    def subset(self, rows: np.ndarray) -> Predictions:
        """The predictions of the given rows (boolean mask or indices), in that order."""
        readers = {k: ReaderCalls(k, r.decision[rows], None if r.score is None else r.score[rows])
                   for k, r in self.readers.items()}
        return replace(self, patient_id=self.patient_id[rows], label=self.label[rows], prob=self.prob[rows],
                       split=None if self.split is None else self.split[rows], readers=readers)

    def select_split(self, split: str) -> Predictions:
        """Only the patients of one split (e.g. "test")."""
        if self.split is None:
            raise AlnvidError(f"cannot select split {split!r}: the CSV has no `split` column.", path=self.path,
                              fix="add a `split` column or leave out the split option.")
        mask = self.split == split
        if not mask.any():
            raise AlnvidError(f"no patient has split {split!r}; splits present: {sorted(set(self.split))}.",
                              path=self.path, fix="choose one of the splits present.")
        return self.subset(mask)


def patient_level(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per patient (mean probability over the patient's videos), the unit of the study's statistics.

    A patient whose videos carry different labels keeps one row per video, identified as `<patient_id>#<line>`.
    """
    mixed = rows.groupby("patient_id")["label"].transform("nunique") > 1
    rows = rows.assign(patient_id=rows["patient_id"].where(~mixed, rows["patient_id"] + "#" + rows["line"].astype(str)))
    grouped = rows.groupby("patient_id", sort=False).agg(label=("label", "first"), prob=("prob", "mean"))
    return grouped.reset_index()[["patient_id", "label", "prob"]]


def _bad_rows(mask: pd.Series, df: pd.DataFrame) -> str:
    ids = df.loc[mask, "patient_id"].astype(str).tolist()
    return ", ".join(ids[:5]) + (f" … ({len(ids)} in all)" if len(ids) > 5 else "")


def load_predictions(path: str | Path, scores: ScoreKind = "probability") -> Predictions:
    """Read and validate a predictions CSV; every problem raises an AlnvidError naming the file.

    `scores` says what the `prob` column holds; probabilities outside [0, 1] are refused.
    """
    path = Path(path)
    if scores not in SCORE_KINDS:
        raise AlnvidError(f"unknown kind of scores {scores!r}", fix=f"use one of: {', '.join(SCORE_KINDS)}.")
    df = read_csv_table(path, "predictions", dtype={"patient_id": str, "split": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise AlnvidError(f"missing column(s) {missing}; found {list(df.columns)}.", path=path,
                          fix="the CSV needs columns patient_id,label,prob (optional: split, reader_<name>, "
                              "reader_<name>_score).")
    if df.empty:
        raise StatsInputError("the CSV has a header but no patients.", path=path, fix="export a non-empty set.")
    if df["patient_id"].isna().any():
        raise StatsInputError(f"{int(df['patient_id'].isna().sum())} row(s) have no patient_id.", path=path,
                              fix="give every row a patient_id.")
    dup = df["patient_id"].duplicated(keep=False)
    if dup.any():
        twin = (f"the run's per-patient {path.name.removesuffix('_videos.csv')}.csv beside it"
                if path.name.endswith("_videos.csv")
                else "one row per patient: `alnvid predict --out X.csv` writes the per-patient table X_patients.csv "
                     "(mean over each patient's videos) beside the per-video X.csv")
        raise StatsInputError(f"duplicated patient_id(s): {_bad_rows(dup, df)}.", path=path, fix=f"give {twin}.")
    label = _binary_column(df, "label", path)
    prob = pd.to_numeric(df["prob"], errors="coerce")
    bad = prob.isna() | ~np.isfinite(prob.to_numpy(float, na_value=np.nan))
    if bad.any():
        raise StatsInputError(f"`prob` is missing or not a finite number for patient(s) {_bad_rows(bad, df)}.",
                              path=path, fix="re-export the predictions or drop those patients.")
    outside = (prob < 0) | (prob > 1)
    if scores == "probability" and outside.any():
        raise StatsInputError(f"`prob` must be a probability in [0, 1], but it ranges from {prob.min():g} to "
                              f"{prob.max():g} (outside for patient(s) {_bad_rows(outside, df)}).", path=path,
                              fix="rescale the scores to [0, 1] (e.g. divide a 0-100 scale by 100), or pass "
                                  "--scores rank or --scores logit if they are not probabilities (then no 0.5 "
                                  "threshold is applied).")
    readers = {}
    reader_cols = [c for c in df.columns if c.startswith("reader_")]
    for col in reader_cols:
        if col.endswith("_score"):
            if col[: -len("_score")] not in df.columns:
                raise AlnvidError(f"column {col!r} has no matching decision column {col[:-len('_score')]!r}.",
                                  path=path, fix="add the reader's 0/1 calls or rename the score column.")
            continue
        name = col[len("reader_"):]
        score = None
        if f"{col}_score" in df.columns:
            s = pd.to_numeric(df[f"{col}_score"], errors="coerce")
            if s.isna().any():
                raise StatsInputError(f"`{col}_score` is missing or non-numeric for patient(s) "
                                      f"{_bad_rows(s.isna(), df)}.", path=path,
                                      fix="fill in the reader's score or drop those patients.")
            score = s.to_numpy(np.float64)
        readers[name] = ReaderCalls(name=name, decision=_binary_column(df, col, path), score=score)
    split = df["split"].fillna("").to_numpy(str) if "split" in df.columns else None
    return Predictions(path=str(path), patient_id=df["patient_id"].to_numpy(str), label=label,
                       prob=prob.to_numpy(np.float64), split=split, readers=readers, scores=scores)


def _binary_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = ~values.isin([0, 1])
    if bad.any():
        raise StatsInputError(f"`{col}` must be 0 or 1; patient(s) {_bad_rows(bad, df)} have "
                              f"{sorted(set(df.loc[bad, col].astype(str)))[:5]}.", path=path,
                              fix=f"encode `{col}` as 0 (no metastasis) / 1 (metastasis), no blanks.")
    return values.to_numpy(np.int64)


def _check_two_classes(pred: Predictions) -> None:
    if pred.n_cases == 0 or pred.n_controls == 0:
        only = "positive (label 1)" if pred.n_controls == 0 else "negative (label 0)"
        raise StatsInputError(f"all {pred.n} patients are {only}; AUC and its CIs need both classes.",
                              path=pred.path, fix="evaluate on a set with metastatic and non-metastatic patients.")
    if min(pred.n_cases, pred.n_controls) < 2:
        raise StatsInputError(f"{pred.n_cases} case(s) and {pred.n_controls} control(s): the AUC's confidence "
                              "intervals and tests need at least 2 of each.", path=pred.path,
                              fix="evaluate on a larger set, with at least 2 metastatic and 2 non-metastatic "
                                  "patients.")


@dataclass(frozen=True)
class ReaderSummary:
    """A reader's metrics, AUC (if scored) and agreement with the model's calls at the threshold (None without a
    threshold, i.e. for ranks or logits)."""

    name: str
    metrics: DiagnosticMetrics
    auc: AucCI | None
    vs_model_delong: AucTest | None
    vs_model_mcnemar: McNemarResult | None
    vs_model_kappa: KappaResult | None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "metrics": self.metrics.to_dict(),
                "auc": None if self.auc is None else self.auc.to_dict(),
                "model_vs_reader_delong": None if self.vs_model_delong is None else self.vs_model_delong.to_dict(),
                "model_vs_reader_mcnemar": None if self.vs_model_mcnemar is None else self.vs_model_mcnemar.to_dict(),
                "model_vs_reader_kappa": None if self.vs_model_kappa is None else self.vs_model_kappa.to_dict()}


@dataclass(frozen=True)
class PredictionSummary:
    """Everything `alnvid stats` reports for one predictions CSV.

    `metrics` are at `threshold` (None for ranks and logits without a threshold). `youden` is the Youden-optimal
    point on the scores' own scale, None with `youden_note` saying why when no threshold beats chance (e.g. every
    patient has the same score).
    """

    path: str
    n: int
    n_cases: int
    n_controls: int
    auc_delong: AucCI
    auc_bootstrap: BootstrapCI
    average_precision: float
    metrics: DiagnosticMetrics | None
    youden: OperatingPoint | None
    readers: list[ReaderSummary]
    reader_kappa: dict[str, KappaResult | None]
    fleiss: FleissKappaResult | None
    scores: ScoreKind = "probability"
    threshold: float | None = STUDY_THRESHOLD
    youden_note: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "n": self.n, "n_cases": self.n_cases, "n_controls": self.n_controls,
                "scores": self.scores, "threshold": self.threshold,
                "auc": self.auc_delong.auc, "auc_delong": self.auc_delong.to_dict(),
                "auc_bootstrap": self.auc_bootstrap.to_dict(), "average_precision": self.average_precision,
                "metrics": None if self.metrics is None else self.metrics.to_dict(),
                "youden": None if self.youden is None else self.youden.to_dict(), "youden_note": self.youden_note,
                "readers": [r.to_dict() for r in self.readers],
                "reader_kappa": {k: None if v is None else v.to_dict() for k, v in self.reader_kappa.items()},
                "fleiss_kappa": None if self.fleiss is None else self.fleiss.to_dict()}


def _kappa_or_none(a: np.ndarray, b: np.ndarray) -> KappaResult | None:
    """Cohen's kappa of two 0/1 call vectors; None when undefined (both raters constant and equal)."""
    try:
        return cohen_kappa(a, b, categories=[0, 1])
    except StatsInputError:
        return None


def default_threshold(scores: ScoreKind) -> float | None:
    """The study's 0.5 for probabilities; no threshold for ranks and logits, whose scale it does not fit."""
    return STUDY_THRESHOLD if scores == "probability" else None


def youden_or_note(labels: np.ndarray, scores: np.ndarray) -> tuple[OperatingPoint | None, str | None]:
    """The Youden-optimal operating point, or None and why when no finite threshold does better than chance."""
    if np.ptp(scores) == 0:
        return None, (f"every patient has the same score ({scores[0]:g}), so the scores do not rank patients "
                      "and no threshold separates them")
    point = youden_point(labels, scores)
    if not np.isfinite(point.threshold):
        return None, "no threshold does better than chance (Youden's J is 0 at best)"
    return point, None


@dataclass(frozen=True)
class GroupSummary:
    """How the model scored one group of patients (a site, a fold, a scanner).

    ``auc`` is None where the group holds one class only (then ``mean_prob`` is what there is to see);
    ``auc_delong`` (the CI) is None where it holds fewer than 2 patients of a class.
    """

    group: str
    n: int
    n_cases: int
    n_controls: int
    mean_prob: float
    auc: float | None
    auc_delong: AucCI | None

    def to_dict(self) -> dict[str, object]:
        return {"group": self.group, "n": self.n, "n_cases": self.n_cases, "n_controls": self.n_controls,
                "mean_prob": self.mean_prob, "auc": self.auc,
                "auc_delong": None if self.auc_delong is None else self.auc_delong.to_dict()}


def group_column(pred: Predictions, table: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """Each patient's value of ``column`` in ``table`` (its first row per patient), in ``pred``'s order; blank
    values form the group '(blank)'. Every patient must be in the table; one kept as ``<id>#<line>`` (videos
    with different labels, see `patient_level`) takes the value of ``<id>``."""
    if "patient_id" not in table.columns or column not in table.columns:
        present = ", ".join(c for c in table.columns if c not in REQUIRED_COLUMNS) or "none"
        raise AlnvidError(f"{source} has no {'patient_id' if 'patient_id' not in table.columns else column} column "
                          f"to group patients by (other columns: {present})",
                          fix="give --by a column of that file, or --manifest a cohort manifest that has it.")
    values = table.drop_duplicates("patient_id").set_index("patient_id")[column].astype(str).str.strip()
    keys = [p if p in values.index or "#" not in p else p.rsplit("#", 1)[0] for p in pred.patient_id]
    absent = [p for p in keys if p not in values.index]
    if absent:
        raise AlnvidError(f"{len(absent)} patient(s) of the predictions are not in {source} (e.g. {absent[0]})",
                          fix="give --manifest the cohort manifest these predictions were made from.")
    return values.loc[keys].replace("", "(blank)").to_numpy()


def summarize_by(pred: Predictions, groups: np.ndarray, level: float = 0.95) -> list[GroupSummary]:
    """Per group (numbers in numeric order, then names): patients, classes, mean score, and the AUC with its DeLong
    CI where the group allows them. Per-site AUCs show whether a model ranks patients within a site or only tells
    sites apart."""
    summaries = []
    for group in sorted(set(groups), key=lambda g: (0, int(g), "") if str(g).isdigit() else (1, 0, str(g))):
        part = pred.subset(groups == group)
        both = 0 < part.n_cases < part.n
        wide = min(part.n_cases, part.n_controls) >= 2
        summaries.append(GroupSummary(
            group=str(group), n=part.n, n_cases=part.n_cases, n_controls=part.n_controls,
            mean_prob=float(part.prob.mean()), auc=float(auc(part.label, part.prob)) if both else None,
            auc_delong=delong_ci(part.label, part.prob, level) if wide else None))
    return summaries


def summarize_predictions(pred: Predictions, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                          threshold: float | None = None, method: CIMethod = "clopper-pearson",
                          level: float = 0.95) -> PredictionSummary:
    """AUC (DeLong and bootstrap CIs), AP, metrics at `threshold`, Youden point, readers and their agreement.

    `threshold` None means the default for the kind of scores (see `default_threshold`).
    """
    _check_two_classes(pred)
    threshold = default_threshold(pred.scores) if threshold is None else threshold
    model_calls = None if threshold is None else (pred.prob >= threshold).astype(np.int64)
    readers = []
    for r in pred.readers.values():
        readers.append(ReaderSummary(
            name=r.name, metrics=decision_metrics(pred.label, r.decision, method, level),
            auc=None if r.score is None else delong_ci(pred.label, r.score, level),
            vs_model_delong=None if r.score is None else delong_test(pred.label, pred.prob, r.score, level),
            vs_model_mcnemar=None if model_calls is None else mcnemar(model_calls, r.decision),
            vs_model_kappa=None if model_calls is None else _kappa_or_none(model_calls, r.decision)))
    pairs = {f"{a}~{b}": _kappa_or_none(pred.readers[a].decision, pred.readers[b].decision)
             for a, b in combinations(pred.readers, 2)}
    fleiss = None
    if len(pred.readers) >= 3:
        try:
            fleiss = fleiss_kappa(np.stack([r.decision for r in pred.readers.values()], axis=1))
        except StatsInputError:
            fleiss = None
    youden, youden_note = youden_or_note(pred.label, pred.prob)
    return PredictionSummary(
        path=pred.path, n=pred.n, n_cases=pred.n_cases, n_controls=pred.n_controls,
        auc_delong=delong_ci(pred.label, pred.prob, level),
        auc_bootstrap=bootstrap_auc_ci(pred.label, pred.prob, n_boot, seed, level),
        average_precision=average_precision(pred.label, pred.prob),
        metrics=None if threshold is None else diagnostic_metrics(pred.label, pred.prob, threshold, method, level),
        youden=youden, readers=readers, reader_kappa=pairs, fleiss=fleiss, scores=pred.scores,
        threshold=threshold, youden_note=youden_note)


@dataclass(frozen=True)
class Comparison:
    """Comparison of the AUCs of two prediction sets (A minus B).

    ``paired`` is True when both files hold exactly the same patients (with the same labels): then
    DeLong's paired test, a paired bootstrap and McNemar's test on the calls at the threshold (none when
    ``threshold`` is None, i.e. for ranks or logits).
    Otherwise the test sets are treated as independent (unpaired DeLong and bootstrap, no McNemar),
    and ``note`` says so. ``to_dict()`` always has the same keys (None where not applicable).
    """

    a: Predictions
    b: Predictions
    paired: bool
    n_common: int
    threshold: float | None
    delong: AucTest
    bootstrap: BootstrapTest
    mcnemar: McNemarResult | None
    note: str | None

    def to_dict(self) -> dict[str, object]:
        def side(p: Predictions, auc: float) -> dict[str, object]:
            return {"path": p.path, "n": p.n, "n_cases": p.n_cases, "n_controls": p.n_controls, "auc": auc}

        return {"a": side(self.a, self.delong.auc1), "b": side(self.b, self.delong.auc2), "paired": self.paired,
                "n_common": self.n_common, "threshold": self.threshold, "delong": self.delong.to_dict(),
                "bootstrap": self.bootstrap.to_dict(),
                "mcnemar": None if self.mcnemar is None else self.mcnemar.to_dict(), "note": self.note}


def compare_predictions(a: Predictions, b: Predictions, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                        threshold: float | None = None, level: float = 0.95) -> Comparison:
    """Compare model A with model B, pairing patients by ``patient_id``.

    `threshold` None means 0.5 when both hold probabilities, else no threshold (no McNemar test).
    """
    _check_two_classes(a)
    _check_two_classes(b)
    if threshold is None and a.scores == b.scores:
        threshold = default_threshold(a.scores)
    common = np.intersect1d(a.patient_id, b.patient_id)
    if common.size == a.n == b.n:
        b = b.subset(_positions(b.patient_id, a.patient_id))
        differ = a.label != b.label
        if differ.any():
            raise StatsInputError(f"the two files disagree on the label of patient(s) "
                                  f"{', '.join(a.patient_id[differ][:5])}.", path=b.path,
                                  fix="both prediction files must come from the same ground truth.")
        return Comparison(a=a, b=b, paired=True, n_common=int(common.size), threshold=threshold,
                          delong=delong_test(a.label, a.prob, b.prob, level),
                          bootstrap=bootstrap_test(a.label, a.prob, b.prob, n_boot, seed, level),
                          mcnemar=None if threshold is None else
                          mcnemar((a.prob >= threshold).astype(int), (b.prob >= threshold).astype(int)), note=None)
    note = ("different patients: unpaired tests (independent test sets)" if common.size == 0 else
            f"the files share {common.size} of {a.n} / {b.n} patients, so they are neither paired nor "
            "independent; the unpaired tests shown are approximate — compare on a common patient set instead")
    return Comparison(a=a, b=b, paired=False, n_common=int(common.size), threshold=threshold,
                      delong=delong_test_unpaired(a.label, a.prob, b.label, b.prob, level),
                      bootstrap=bootstrap_test_unpaired(a.label, a.prob, b.label, b.prob, n_boot, seed, level),
                      mcnemar=None, note=note)


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Indices into `ids` that reorder it like `wanted` (same set of unique ids)."""
    order = np.argsort(ids)
    return order[np.searchsorted(ids[order], wanted)]


def compare_csvs(path_a: str | Path, path_b: str | Path, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                 threshold: float | None = None, scores: ScoreKind = "probability") -> Comparison:
    """Load two predictions CSVs holding `scores` and compare them (see `compare_predictions`)."""
    return compare_predictions(load_predictions(path_a, scores), load_predictions(path_b, scores), n_boot, seed,
                               threshold)
