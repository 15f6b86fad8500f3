"""Agreement between paired decisions: McNemar's test, Cohen's (weighted) kappa, Fleiss' kappa.

Used to compare a model's calls at P >= 0.5 with a sonographer's on the same patients, and readers
with each other.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import binomtest, chi2, norm

from alnvid.errors import StatsInputError
from alnvid.stats._checks import as_labels, check_level

KappaWeights = Literal["linear", "quadratic"] | None


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on the discordant pairs b (1 yes, 2 no) and c (1 no, 2 yes).

    Exact p is the two-sided binomial test of b against Binomial(b + c, 1/2). With no discordant
    pairs the two raters agree perfectly: statistics 0 and p = 1.
    """

    b: int
    c: int
    statistic: float
    p_value: float
    statistic_corrected: float
    p_value_corrected: float
    p_value_exact: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def mcnemar_table(table: ArrayLike) -> McNemarResult:
    """McNemar's test from a 2x2 table [[both yes, 1 yes 2 no], [1 no 2 yes, both no]] (any fixed orientation)."""
    t = _count_table(table, "table")
    if t.shape != (2, 2):
        raise StatsInputError(f"McNemar's test needs a 2x2 table, got shape {t.shape}.",
                              fix="cross-tabulate two binary decisions.")
    b, c = int(t[0, 1]), int(t[1, 0])
    if b + c == 0:
        return McNemarResult(b=0, c=0, statistic=0.0, p_value=1.0, statistic_corrected=0.0, p_value_corrected=1.0,
                             p_value_exact=1.0)
    stat = (b - c) ** 2 / (b + c)
    stat_cc = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    return McNemarResult(b=b, c=c, statistic=float(stat), p_value=float(chi2.sf(stat, 1)),
                         statistic_corrected=float(stat_cc), p_value_corrected=float(chi2.sf(stat_cc, 1)),
                         p_value_exact=float(binomtest(b, b + c, 0.5).pvalue))


def mcnemar(decisions1: ArrayLike, decisions2: ArrayLike) -> McNemarResult:
    """McNemar's test of two raters' paired 0/1 decisions on the same patients."""
    d1, d2 = as_labels(decisions1, "decisions1"), as_labels(decisions2, "decisions2")
    _same_length(d1, d2)
    return mcnemar_table(np.array([[np.sum((d1 == 1) & (d2 == 1)), np.sum((d1 == 1) & (d2 == 0))],
                                   [np.sum((d1 == 0) & (d2 == 1)), np.sum((d1 == 0) & (d2 == 0))]]))


@dataclass(frozen=True)
class KappaResult:
    """Kappa with its asymptotic SE (Fleiss, Cohen & Everitt 1969), CI ``kappa ± z·SE``, and a Z test
    of kappa = 0 using the SE under the null hypothesis (as SAS PROC FREQ)."""

    kappa: float
    se: float
    ci_low: float
    ci_high: float
    se_null: float
    z: float
    p_value: float
    level: float
    weights: str
    n: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _agreement_weights(k: int, weights: KappaWeights) -> np.ndarray:
    if weights is None:
        return np.eye(k)
    if k < 2:
        return np.ones((1, 1))
    distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k))) / (k - 1)
    if weights == "linear":
        return 1 - distance
    if weights == "quadratic":
        return 1 - distance**2
    raise StatsInputError(f"unknown kappa weights {weights!r}.", fix="use None, 'linear' or 'quadratic'.")


def cohen_kappa_table(table: ArrayLike, weights: KappaWeights = None, level: float = 0.95) -> KappaResult:
    """Cohen's kappa from a k x k table (rows rater 1, columns rater 2, categories in order)."""
    level = check_level(level)
    t = _count_table(table, "table")
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 2:
        raise StatsInputError(f"kappa needs a square table of at least 2x2, got shape {t.shape}.",
                              fix="list the same categories, in the same order, for both raters.")
    n = t.sum()
    p = t / n
    w = _agreement_weights(t.shape[0], weights)
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    p_obs = float(np.sum(w * p))
    p_exp = float(np.sum(w * np.outer(rows, cols)))
    if p_exp == 1.0:
        raise StatsInputError("kappa is undefined: both raters used a single category for every patient.",
                              fix="kappa needs variation in at least one rater's calls; report raw agreement instead.")
    kappa = (p_obs - p_exp) / (1 - p_exp)
    w_row, w_col = w @ cols, rows @ w  # mean weight of each row / column category
    w_sum = np.add.outer(w_row, w_col)
    var = (np.sum(p * (w - w_sum * (1 - kappa)) ** 2) - (kappa - p_exp * (1 - kappa)) ** 2) / ((1 - p_exp) ** 2 * n)
    var_null = (np.sum(np.outer(rows, cols) * (w - w_sum) ** 2) - p_exp**2) / ((1 - p_exp) ** 2 * n)
    se, se_null = float(np.sqrt(max(var, 0.0))), float(np.sqrt(max(var_null, 0.0)))
    z = kappa / se_null if se_null > 0 else 0.0
    half = norm.ppf(0.5 + level / 2) * se
    return KappaResult(kappa=float(kappa), se=se, ci_low=float(max(-1.0, kappa - half)),
                       ci_high=float(min(1.0, kappa + half)),
                       se_null=se_null, z=float(z), p_value=float(2 * norm.sf(abs(z))), level=level,
                       weights=weights or "none", n=int(n))


def cohen_kappa(ratings1: ArrayLike, ratings2: ArrayLike, weights: KappaWeights = None,
                categories: ArrayLike | None = None, level: float = 0.95) -> KappaResult:
    """Cohen's kappa of two raters' ratings of the same patients.

    `categories` fixes the category order (needed for weighted kappa on ordinal scales that a rater
    never used entirely); by default the sorted union of observed ratings.
    """
    r1, r2 = np.asarray(ratings1), np.asarray(ratings2)
    _same_length(r1, r2)
    cats = np.unique(np.concatenate([r1, r2])) if categories is None else np.asarray(categories)
    i1, i2 = _category_index(r1, cats, "ratings1"), _category_index(r2, cats, "ratings2")
    table = np.zeros((len(cats), len(cats)), dtype=np.int64)
    np.add.at(table, (i1, i2), 1)
    if len(cats) < 2:
        table = np.pad(table, ((0, 1), (0, 1)))
    return cohen_kappa_table(table, weights, level)


@dataclass(frozen=True)
class FleissKappaResult:
    """Fleiss' kappa for several raters with its SE under no agreement (Fleiss, Nee & Landis 1979)."""

    kappa: float
    se_null: float
    z: float
    p_value: float
    n_subjects: int
    n_raters: int
    n_categories: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def fleiss_kappa_counts(counts: ArrayLike) -> FleissKappaResult:
    """Fleiss' kappa from a subjects x categories table of how many raters chose each category."""
    c = _count_table(counts, "counts")
    if c.ndim != 2 or c.shape[1] < 2:
        raise StatsInputError(f"Fleiss' kappa needs a subjects x categories table, got shape {c.shape}.",
                              fix="count, for each patient, how many readers chose each category.")
    raters = c.sum(axis=1)
    if np.any(raters != raters[0]) or raters[0] < 2:
        raise StatsInputError("Fleiss' kappa needs the same number (>= 2) of ratings for every patient; "
                              f"found {sorted(set(raters.tolist()))[:5]}.",
                              fix="drop patients that some readers did not rate.")
    n_sub, m = c.shape[0], int(raters[0])
    p_cat = c.sum(axis=0) / (n_sub * m)
    p_exp = float(np.sum(p_cat**2))
    if p_exp == 1.0:
        raise StatsInputError("Fleiss' kappa is undefined: every reader chose the same category for every patient.",
                              fix="report raw agreement instead.")
    p_obs = float(np.mean((np.sum(c**2, axis=1) - m) / (m * (m - 1))))
    kappa = (p_obs - p_exp) / (1 - p_exp)
    pq = p_cat * (1 - p_cat)
    se_null = float(np.sqrt(2 / (n_sub * m * (m - 1))) * np.sqrt(pq.sum() ** 2 - np.sum(pq * (1 - 2 * p_cat)))
                    / pq.sum())
    z = kappa / se_null
    return FleissKappaResult(kappa=float(kappa), se_null=se_null, z=float(z), p_value=float(2 * norm.sf(abs(z))),
                             n_subjects=n_sub, n_raters=m, n_categories=c.shape[1])


def fleiss_kappa(ratings: ArrayLike) -> FleissKappaResult:
    """Fleiss' kappa from a subjects x raters array of category ratings (e.g. 3+ sonographers)."""
    r = np.asarray(ratings)
    if r.ndim != 2 or r.shape[1] < 2:
        raise StatsInputError(f"ratings must be a patients x readers array with >= 2 readers, got shape {r.shape}.",
                              fix="pass one column per reader, one row per patient.")
    cats = np.unique(r)
    idx = _category_index(r.ravel(), cats, "ratings").reshape(r.shape)
    counts = np.zeros((r.shape[0], max(len(cats), 2)), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(r.shape[0]), r.shape[1]), idx.ravel()), 1)
    return fleiss_kappa_counts(counts)


def _count_table(table: ArrayLike, name: str) -> np.ndarray:
    t = np.asarray(table, dtype=np.float64)
    if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t != np.round(t)) or t.sum() == 0:
        raise StatsInputError(f"`{name}` must hold non-negative whole-number counts with a positive total.",
                              fix="pass a contingency table of patient counts.")
    return t


def _category_index(ratings: np.ndarray, categories: np.ndarray, name: str) -> np.ndarray:
    if ratings.dtype.kind == "f" and np.any(np.isnan(ratings)):
        raise StatsInputError(f"`{name}` has missing (NaN) ratings.",
                              fix="drop patients without a rating from every rater first.")
    idx = np.searchsorted(categories, ratings) if categories.size else np.zeros(ratings.shape, int)
    idx = np.clip(idx, 0, max(categories.size - 1, 0))
    unknown = categories[idx] != ratings
    if np.any(unknown):
        raise StatsInputError(f"`{name}` has ratings {np.unique(ratings[unknown])[:5].tolist()} not in the "
                              f"categories {categories.tolist()}.", fix="add them to `categories` or fix the ratings.")
    return idx


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 1:
        raise StatsInputError(f"paired ratings must be two 1-D arrays of equal length, got {a.shape} and {b.shape}.",
                              fix="pass one rating per patient from each rater, in the same patient order.")
