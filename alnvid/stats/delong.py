"""DeLong's nonparametric AUC variance, confidence interval and tests, as in R's pROC.

Uses the fast mid-rank algorithm of Sun & Xu (2014, IEEE Signal Process. Lett. 21(11):1389), which
needs only three rankings per model (O(n log n)) and handles any number of correlated models at once.
Direction: a higher score means a case (pROC's ``direction = "<"``); we never flip it from the data.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm, rankdata
from scipy.stats import t as student_t

from alnvid.errors import StatsInputError
from alnvid.stats._checks import as_scores, check_binary, check_level


@dataclass(frozen=True)
class DelongEstimate:
    """AUCs of k models scored on the same patients and their k x k DeLong covariance matrix."""

    aucs: np.ndarray
    covariance: np.ndarray
    n_cases: int
    n_controls: int


def delong_covariance(labels: ArrayLike, scores: ArrayLike | list[ArrayLike]) -> DelongEstimate:
    """AUCs and DeLong covariance for one score vector or a list / (k, n) array of them.

    Variance is ``var(V10)/m + var(V01)/n`` with sample (n-1) variances of the placements, as pROC;
    it needs at least 2 cases and 2 controls.
    """
    try:
        score_rows = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    except ValueError:
        raise StatsInputError("the score vectors have different lengths (or are not numeric).",
                              fix="score every model on the same patients, one value per patient.") from None
    y = None
    rows = []
    for i, row in enumerate(score_rows):
        y, s = check_binary(labels, row, scores_name=f"scores[{i}]" if len(score_rows) > 1 else "scores",
                            min_per_class=2)
        rows.append(s)
    is_case = y.astype(bool)
    cases = np.stack(rows)[:, is_case]
    controls = np.stack(rows)[:, ~is_case]
    m, n = cases.shape[1], controls.shape[1]
    rank_cases = rankdata(cases, axis=1)
    rank_controls = rankdata(controls, axis=1)
    rank_all = rankdata(np.concatenate([cases, controls], axis=1), axis=1)
    aucs = (rank_all[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v10 = (rank_all[:, :m] - rank_cases) / n  # per case: fraction of controls scored lower (ties 1/2)
    v01 = 1.0 - (rank_all[:, m:] - rank_controls) / m  # per control: fraction of cases scored higher
    cov = _cov(v10) / m + _cov(v01) / n
    return DelongEstimate(aucs=aucs, covariance=cov, n_cases=m, n_controls=n)


def _cov(placements: np.ndarray) -> np.ndarray:
    """Sample (n - 1) covariance of the rows (one row per model)."""
    return np.atleast_2d(np.cov(placements))


@dataclass(frozen=True)
class AucCI:
    """An AUC with its standard error and confidence interval."""

    auc: float
    se: float
    ci_low: float
    ci_high: float
    level: float
    method: str

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def delong_ci(labels: ArrayLike, scores: ArrayLike, level: float = 0.95) -> AucCI:
    """AUC with DeLong CI ``AUC ± z·sd`` clipped to [0, 1] (pROC's ``ci.auc(method = "delong")``)."""
    level = check_level(level)
    est = delong_covariance(labels, as_scores(scores))
    a, se = float(est.aucs[0]), float(np.sqrt(est.covariance[0, 0]))
    half = norm.ppf(0.5 + level / 2) * se
    return AucCI(auc=a, se=se, ci_low=float(max(0.0, a - half)), ci_high=float(min(1.0, a + half)), level=level,
                 method="delong")


@dataclass(frozen=True)
class AucTest:
    """Comparison of two AUCs (model 1 minus model 2).

    ``statistic`` is DeLong's Z (paired, normal p) or pROC's D (unpaired, Student t p with ``df``).
    ``p_greater`` tests AUC1 > AUC2, ``p_less`` AUC1 < AUC2. The CI of the difference is given for
    the paired test only (pROC gives none for unpaired DeLong).
    """

    auc1: float
    auc2: float
    difference: float
    statistic: float
    df: float | None
    p_value: float
    p_greater: float
    p_less: float
    ci_low: float | None
    ci_high: float | None
    level: float
    paired: bool
    method: str

    def to_dict(self) -> dict[str, float | str | bool | None]:
        return asdict(self)


def _z_or_degenerate(difference: float, variance: float) -> float:
    """Z = diff / sd, with Z = 0 for identical models (0/0) and ±inf for a non-zero diff of zero variance."""
    if variance > 0:
        return difference / np.sqrt(variance)
    return 0.0 if difference == 0 else float(np.copysign(np.inf, difference))


def delong_test(labels: ArrayLike, scores1: ArrayLike, scores2: ArrayLike, level: float = 0.95) -> AucTest:
    """Paired DeLong test of two correlated AUCs on the same patients (pROC ``roc.test(r1, r2)``)."""
    level = check_level(level)
    s1, s2 = as_scores(scores1, "scores1"), as_scores(scores2, "scores2")
    if s1.shape != s2.shape:
        raise StatsInputError(f"paired test needs the same patients: `scores1` has {s1.size} values, "
                              f"`scores2` has {s2.size}.", fix="align both models' scores on the same patients, "
                              "or use delong_test_unpaired for independent test sets.")
    est = delong_covariance(labels, np.stack([s1, s2]))
    diff = float(est.aucs[0] - est.aucs[1])
    var = float(est.covariance[0, 0] + est.covariance[1, 1] - 2 * est.covariance[0, 1])
    var = max(var, 0.0)  # rounding can make the variance of identical rankings slightly negative
    z = _z_or_degenerate(diff, var)
    half = norm.ppf(0.5 + level / 2) * np.sqrt(var)
    return AucTest(auc1=float(est.aucs[0]), auc2=float(est.aucs[1]), difference=diff, statistic=float(z), df=None,
                   p_value=float(min(1.0, 2 * norm.sf(abs(z)))), p_greater=float(norm.sf(z)),
                   p_less=float(norm.cdf(z)), ci_low=float(diff - half), ci_high=float(diff + half), level=level,
                   paired=True,
                   method="delong-paired")


def delong_test_unpaired(labels1: ArrayLike, scores1: ArrayLike, labels2: ArrayLike, scores2: ArrayLike,
                         level: float = 0.95) -> AucTest:
    """Unpaired DeLong test for two independent test sets (pROC ``roc.test(..., paired = FALSE)``).

    ``D = (AUC1 - AUC2) / sqrt(V1 + V2)``, p from Student t with Welch-type
    ``df = (V1 + V2)^2 / (V1^2/(N1 - 1) + V2^2/(N2 - 1))`` (N = all patients of a set), as pROC.
    """
    level = check_level(level)
    est1 = delong_covariance(labels1, as_scores(scores1, "scores1"))
    est2 = delong_covariance(labels2, as_scores(scores2, "scores2"))
    v1, v2 = float(est1.covariance[0, 0]), float(est2.covariance[0, 0])
    n1, n2 = est1.n_cases + est1.n_controls, est2.n_cases + est2.n_controls
    diff = float(est1.aucs[0] - est2.aucs[0])
    d = _z_or_degenerate(diff, v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1)) if v1 + v2 > 0 else float("inf")
    return AucTest(auc1=float(est1.aucs[0]), auc2=float(est2.aucs[0]), difference=diff, statistic=float(d),
                   df=float(df), p_value=float(min(1.0, 2 * student_t.sf(abs(d), df))),
                   p_greater=float(student_t.sf(d, df)), p_less=float(student_t.cdf(d, df)), ci_low=None,
                   ci_high=None, level=level, paired=False, method="delong-unpaired")
