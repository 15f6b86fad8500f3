"""ROC and precision-recall curves, AUC, average precision and operating points.

Convention (as pROC's ``direction = "<"``): a higher score means a case (label 1), and a patient is
called positive when ``score >= threshold``. We never flip the direction from the data, so an AUC
below 0.5 is reported as such instead of being silently mirrored.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from alnvid.errors import StatsInputError
from alnvid.stats._checks import as_labels, as_scores, check_binary

STUDY_THRESHOLD = 0.5
"""The study's operating point: a patient is called metastatic when P(metastasis) >= 0.5."""


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve = P(case score > control score) + 1/2 P(tie) (Mann–Whitney)."""
    y, s = check_binary(labels, scores)
    return _auc_from_ranks(y.astype(bool), s)


def _auc_from_ranks(is_case: np.ndarray, scores: np.ndarray) -> float:
    n_cases = int(is_case.sum())
    n_controls = is_case.size - n_cases
    rank_sum = rankdata(scores)[is_case].sum()
    return float((rank_sum - n_cases * (n_cases + 1) / 2) / (n_cases * n_controls))


@dataclass(frozen=True)
class RocCurve:
    """Empirical ROC curve, one point per distinct threshold from (0, 0) to (1, 1)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> RocCurve:
    """ROC points for thresholds at every distinct score (descending; the first is +inf)."""
    y, s = check_binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tp = np.r_[0, np.cumsum(y_sorted)[last_of_tie]]
    fp = np.r_[0, (last_of_tie + 1) - tp[1:]]
    return RocCurve(fpr=fp / fp[-1], tpr=tp / tp[-1], thresholds=np.r_[np.inf, s_sorted[last_of_tie]],
                    auc=_auc_from_ranks(y.astype(bool), s))


@dataclass(frozen=True)
class PrCurve:
    """Precision–recall points for thresholds at every distinct score (descending)."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    average_precision: float


def pr_curve(labels: ArrayLike, scores: ArrayLike) -> PrCurve:
    """Precision–recall curve and step-wise average precision (as scikit-learn, no interpolation)."""
    roc = roc_curve(labels, scores)
    y = np.asarray(labels)
    n_pos, n_neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    tp, fp = roc.tpr[1:] * n_pos, roc.fpr[1:] * n_neg
    precision = tp / (tp + fp)
    recall = roc.tpr[1:]
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return PrCurve(precision=precision, recall=recall, thresholds=roc.thresholds[1:], average_precision=ap)


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision: sum over thresholds of (recall increase) x precision."""
    return pr_curve(labels, scores).average_precision


@dataclass(frozen=True)
class OperatingPoint:
    """Confusion counts and rates when patients with ``score >= threshold`` are called positive."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def sensitivity(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float:
        return _ratio(self.tn, self.tn + self.fn)

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn)

    @property
    def youden(self) -> float:
        """Youden's J = sensitivity + specificity - 1."""
        return self.sensitivity + self.specificity - 1.0

    def to_dict(self) -> dict[str, float | int]:
        rates = {k: getattr(self, k) for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "youden")}
        return {**asdict(self), **rates}


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def confusion_at(labels: ArrayLike, decisions: ArrayLike, threshold: float = float("nan")) -> OperatingPoint:
    """Confusion counts of 0/1 `decisions` (e.g. a reader's calls) against 0/1 `labels`."""
    y = as_labels(labels)
    d = as_labels(decisions, "decisions")
    if y.shape != d.shape:
        raise StatsInputError(f"`labels` has {y.size} values but `decisions` has {d.size}.",
                              fix="pass one label and one decision per patient, in the same order.")
    return OperatingPoint(threshold=threshold, tp=int(np.sum((d == 1) & (y == 1))), fp=int(np.sum((d == 1) & (y == 0))),
                          tn=int(np.sum((d == 0) & (y == 0))), fn=int(np.sum((d == 0) & (y == 1))))


def operating_point(labels: ArrayLike, scores: ArrayLike, threshold: float = STUDY_THRESHOLD) -> OperatingPoint:
    """Confusion counts at a fixed threshold (positive when ``score >= threshold``; study rule P >= 0.5)."""
    s = as_scores(scores)
    return confusion_at(labels, (s >= threshold).astype(np.int64), threshold=float(threshold))


@dataclass(frozen=True)
class Coords:
    """pROC-style coordinates: one row per threshold (-inf, midpoints between distinct scores, +inf)."""

    threshold: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray

    @property
    def sensitivity(self) -> np.ndarray:
        return self.tp / (self.tp + self.fn)

    @property
    def specificity(self) -> np.ndarray:
        return self.tn / (self.tn + self.fp)

    @property
    def youden(self) -> np.ndarray:
        """Youden's J = sensitivity + specificity - 1 (pROC's ``youden`` column is J + 1)."""
        return self.sensitivity + self.specificity - 1.0

    def best_youden(self) -> OperatingPoint:
        """The threshold maximising Youden's J (the lowest such threshold on ties, as pROC lists first)."""
        i = int(np.argmax(self.youden))
        return OperatingPoint(threshold=float(self.threshold[i]), tp=int(self.tp[i]), fp=int(self.fp[i]),
                              tn=int(self.tn[i]), fn=int(self.fn[i]))

    def to_frame(self) -> pd.DataFrame:
        """All of pROC's ``coords(..., "all", ret = "all")`` columns, with pROC's names and definitions."""
        tp, fp, tn, fn = (a.astype(np.float64) for a in (self.tp, self.fp, self.tn, self.fn))
        with np.errstate(divide="ignore", invalid="ignore"):
            sens, spec = tp / (tp + fn), tn / (tn + fp)
            ppv, npv = tp / (tp + fp), tn / (tn + fn)
            acc = (tp + tn) / (tp + tn + fp + fn)
            lr_pos, lr_neg = sens / (1 - spec), (1 - sens) / spec
        return pd.DataFrame({
            "threshold": self.threshold, "specificity": spec, "sensitivity": sens, "accuracy": acc,
            "tn": tn, "tp": tp, "fn": fn, "fp": fp, "npv": npv, "ppv": ppv, "fdr": 1 - ppv, "fpr": 1 - spec,
            "tpr": sens, "tnr": spec, "fnr": 1 - sens, "1-specificity": 1 - spec, "1-sensitivity": 1 - sens,
            "1-accuracy": 1 - acc, "1-npv": 1 - npv, "1-ppv": 1 - ppv, "precision": ppv, "recall": sens,
            "lr_pos": lr_pos, "lr_neg": lr_neg, "youden": sens + spec,
            "closest.topleft": (1 - sens) ** 2 + (1 - spec) ** 2,
        })


def coords(labels: ArrayLike, scores: ArrayLike) -> Coords:
    """Every operating point as pROC's ``coords(roc(labels, scores), "all")`` lists it.

    Thresholds are -inf, the midpoints between consecutive distinct scores, and +inf (ascending), so
    each threshold separates the data cleanly whether one uses ``>`` or ``>=``.
    """
    y, s = check_binary(labels, scores)
    distinct = np.unique(s)
    thresholds = np.r_[-np.inf, (distinct[:-1] + distinct[1:]) / 2, np.inf]
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    # number of cases / controls with score below each threshold
    pos_below = np.searchsorted(np.sort(s[y == 1]), thresholds, side="left")
    neg_below = np.searchsorted(np.sort(s[y == 0]), thresholds, side="left")
    return Coords(threshold=thresholds, tp=n_pos - pos_below, fp=n_neg - neg_below, tn=neg_below, fn=pos_below)


def youden_point(labels: ArrayLike, scores: ArrayLike) -> OperatingPoint:
    """Operating point that maximises Youden's J over pROC's thresholds."""
    return coords(labels, scores).best_youden()
