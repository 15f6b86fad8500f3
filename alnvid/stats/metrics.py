"""Diagnostic metrics at an operating point, each with its counts and a 95% CI.

Proportions (accuracy, sensitivity, specificity, PPV, NPV) get an exact Clopper–Pearson or a Wilson
score interval. F1 = 2TP / (2TP + FP + FN) is a monotone transform of the Jaccard index
J = TP / (TP + FP + FN), itself a binomial proportion, so its CI is the transformed CI of J.
Likelihood ratios get the log-method CI of Simel, Samsa & Matchar (1991), as MedCalc reports.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta, norm

from alnvid.errors import StatsInputError
from alnvid.stats._checks import check_level
from alnvid.stats.roc import (
    STUDY_THRESHOLD,
    OperatingPoint,
    confusion_at,
    operating_point,
)

CIMethod = Literal["clopper-pearson", "wilson"]


def clopper_pearson_ci(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) binomial CI; (nan, nan) when there are no trials."""
    k, n = _check_counts(successes, trials)
    if n == 0:
        return float("nan"), float("nan")
    alpha = 1 - check_level(level)
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def wilson_ci(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score binomial CI (no continuity correction); (nan, nan) when there are no trials."""
    k, n = _check_counts(successes, trials)
    if n == 0:
        return float("nan"), float("nan")
    z = norm.ppf(0.5 + check_level(level) / 2)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return float(max(0.0, centre - half)) if k else 0.0, float(min(1.0, centre + half)) if k < n else 1.0


def _check_counts(successes: int, trials: int) -> tuple[int, int]:
    k, n = int(successes), int(trials)
    if k != successes or n != trials or not 0 <= k <= n:
        raise StatsInputError("binomial counts must be integers with 0 <= successes <= trials, "
                              f"got {successes}/{trials}.",
                              fix="pass whole-number counts.")
    return k, n


_CI_FUNCTIONS = {"clopper-pearson": clopper_pearson_ci, "wilson": wilson_ci}


@dataclass(frozen=True)
class Metric:
    """One diagnostic metric: value, the counts behind it (e.g. 52/61) and its CI.

    ``numerator``/``denominator`` are None for likelihood ratios (a ratio of two proportions, whose
    counts are in ``counts``).
    """

    name: str
    value: float
    numerator: int | None
    denominator: int | None
    ci_low: float
    ci_high: float
    method: str
    counts: str

    def to_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def proportion(name: str, successes: int, trials: int, method: CIMethod = "clopper-pearson",
               level: float = 0.95) -> Metric:
    """A binomial proportion with its CI."""
    if method not in _CI_FUNCTIONS:
        raise StatsInputError(f"unknown CI method {method!r}.", fix=f"use one of {sorted(_CI_FUNCTIONS)}.")
    low, high = _CI_FUNCTIONS[method](successes, trials, level)
    value = successes / trials if trials else float("nan")
    return Metric(name=name, value=value, numerator=int(successes), denominator=int(trials), ci_low=low,
                  ci_high=high, method=method, counts=f"{successes}/{trials}")


def _f1(tp: int, fp: int, fn: int, method: CIMethod, level: float) -> Metric:
    jaccard = proportion("jaccard", tp, tp + fp + fn, method, level)

    def to_f1(j: float) -> float:
        return 2 * j / (1 + j)

    return Metric(name="f1", value=to_f1(jaccard.value), numerator=2 * tp, denominator=2 * tp + fp + fn,
                  ci_low=to_f1(jaccard.ci_low), ci_high=to_f1(jaccard.ci_high), method=f"{method} (via Jaccard)",
                  counts=f"{2 * tp}/{2 * tp + fp + fn}")


def _likelihood_ratio(name: str, a: int, n_a: int, b: int, n_b: int, level: float) -> Metric:
    """(a/n_a) / (b/n_b) with the log-method CI; the CI is NaN when a or b is 0."""
    counts = f"({a}/{n_a}) / ({b}/{n_b})"
    if n_a == 0 or n_b == 0:
        value = float("nan")
    else:
        value = (a / n_a) / (b / n_b) if b else (float("inf") if a else float("nan"))
    if a > 0 and b > 0:
        z = norm.ppf(0.5 + level / 2)
        se = np.sqrt(1 / a - 1 / n_a + 1 / b - 1 / n_b)
        low, high = float(value * np.exp(-z * se)), float(value * np.exp(z * se))
    else:
        low = high = float("nan")
    return Metric(name=name, value=value, numerator=None, denominator=None, ci_low=low, ci_high=high,
                  method="log (Simel 1991)", counts=counts)


@dataclass(frozen=True)
class DiagnosticMetrics:
    """All metrics of one operating point."""

    point: OperatingPoint
    accuracy: Metric
    sensitivity: Metric
    specificity: Metric
    ppv: Metric
    npv: Metric
    f1: Metric
    lr_positive: Metric
    lr_negative: Metric

    def metrics(self) -> list[Metric]:
        return [self.accuracy, self.sensitivity, self.specificity, self.ppv, self.npv, self.f1, self.lr_positive,
                self.lr_negative]

    def to_dict(self) -> dict[str, object]:
        return {"threshold": self.point.threshold, "tp": self.point.tp, "fp": self.point.fp, "tn": self.point.tn,
                "fn": self.point.fn, **{m.name: m.to_dict() for m in self.metrics()}}


def metrics_from_point(point: OperatingPoint, method: CIMethod = "clopper-pearson",
                       level: float = 0.95) -> DiagnosticMetrics:
    """Metrics with CIs from confusion counts."""
    level = check_level(level)
    tp, fp, tn, fn = point.tp, point.fp, point.tn, point.fn
    return DiagnosticMetrics(
        point=point,
        accuracy=proportion("accuracy", tp + tn, tp + fp + tn + fn, method, level),
        sensitivity=proportion("sensitivity", tp, tp + fn, method, level),
        specificity=proportion("specificity", tn, tn + fp, method, level),
        ppv=proportion("ppv", tp, tp + fp, method, level),
        npv=proportion("npv", tn, tn + fn, method, level),
        f1=_f1(tp, fp, fn, method, level),
        lr_positive=_likelihood_ratio("lr_positive", tp, tp + fn, fp, fp + tn, level),
        lr_negative=_likelihood_ratio("lr_negative", fn, tp + fn, tn, fp + tn, level),
    )


def diagnostic_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float = STUDY_THRESHOLD,
                       method: CIMethod = "clopper-pearson", level: float = 0.95) -> DiagnosticMetrics:
    """Metrics when patients with ``score >= threshold`` are called positive (study rule: P >= 0.5)."""
    return metrics_from_point(operating_point(labels, scores, threshold), method, level)


def decision_metrics(labels: ArrayLike, decisions: ArrayLike, method: CIMethod = "clopper-pearson",
                     level: float = 0.95) -> DiagnosticMetrics:
    """Metrics of 0/1 decisions, e.g. a sonographer's calls."""
    return metrics_from_point(confusion_at(labels, decisions), method, level)
