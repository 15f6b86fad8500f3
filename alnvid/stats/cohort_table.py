"""The study's Table 1: patient characteristics per group (e.g. training / validation / test split).

Numeric columns: median [IQR] (or mean ± SD) with Mann–Whitney U for two groups (exact when both
groups have < 50 values and no ties, else normal with continuity correction — R's ``wilcox.test``
rule) or Kruskal–Wallis for more. Categorical columns: n (%) with Pearson's chi-square (Yates
corrected for 2x2, as R's ``chisq.test``) or Fisher's exact test for a 2x2 table with an expected
count below 5. Percentages use the non-missing values; missing values are counted in their own row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, fisher_exact, kruskal, mannwhitneyu

from alnvid.errors import StatsInputError

TEST_MANN_WHITNEY = "Mann–Whitney U"
TEST_KRUSKAL = "Kruskal–Wallis"
TEST_CHI2 = "Pearson chi-square"
TEST_CHI2_YATES = "Pearson chi-square (Yates)"
TEST_FISHER = "Fisher exact"


@dataclass(frozen=True)
class CohortTable:
    """Table 1 as a DataFrame (one row per variable or category level) and the tests used per variable."""

    table: pd.DataFrame
    tests: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TestResult:
    """A two-sided p-value, the test that produced it and its statistic."""

    test: str
    statistic: float
    p_value: float


def mann_whitney(x: np.ndarray, y: np.ndarray) -> TestResult:
    """Two-sided Mann–Whitney U (W of `x`), R ``wilcox.test`` defaults (exact if n < 50 and no ties)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ties = np.unique(np.r_[x, y]).size < x.size + y.size
    exact = x.size < 50 and y.size < 50 and not ties
    res = mannwhitneyu(x, y, alternative="two-sided", method="exact" if exact else "asymptotic", use_continuity=True)
    return TestResult(test=TEST_MANN_WHITNEY, statistic=float(res.statistic), p_value=float(res.pvalue))


def categorical_test(counts: np.ndarray) -> TestResult:
    """Chi-square test of a levels x groups table, or Fisher's exact for a 2x2 with an expected count < 5."""
    counts = counts[counts.sum(axis=1) > 0][:, counts.sum(axis=0) > 0]
    if counts.shape[0] < 2 or counts.shape[1] < 2:
        return TestResult(test=TEST_CHI2, statistic=float("nan"), p_value=float("nan"))
    stat, p, _, expected = chi2_contingency(counts, correction=True)
    if counts.shape == (2, 2):
        if np.any(expected < 5):
            res = fisher_exact(counts)
            return TestResult(test=TEST_FISHER, statistic=float(res.statistic), p_value=float(res.pvalue))
        return TestResult(test=TEST_CHI2_YATES, statistic=float(stat), p_value=float(p))
    return TestResult(test=TEST_CHI2, statistic=float(stat), p_value=float(p))


def cohort_table(df: pd.DataFrame, group: str, columns: list[str] | None = None,
                 categorical: list[str] | None = None, numeric_summary: Literal["median", "mean"] = "median",
                 overall: bool = True, digits: int = 1) -> CohortTable:
    """Build Table 1 of `df` by `group`.

    `columns` defaults to every column except `group`; a column is categorical if listed in
    `categorical` or not numeric (booleans and strings included). Returned columns: ``variable``,
    ``level``, ``Overall`` (optional), one ``<group> (n=...)`` per group, ``p_value``, ``test``.
    """
    if group not in df.columns:
        raise StatsInputError(f"group column {group!r} is not in the table (columns: {list(df.columns)}).",
                              fix="pass the name of the column that holds the split or group.")
    if df[group].isna().any():
        raise StatsInputError(f"group column {group!r} has {int(df[group].isna().sum())} missing value(s).",
                              fix="assign every patient to a group or drop unassigned patients.")
    groups = list(pd.unique(df[group]))
    if len(groups) < 2:
        raise StatsInputError(f"group column {group!r} has a single value {groups}; nothing to compare.",
                              fix="pass a column with at least two groups.")
    if numeric_summary not in ("median", "mean"):
        raise StatsInputError(f"numeric_summary must be 'median' or 'mean', got {numeric_summary!r}.")
    columns = [c for c in df.columns if c != group] if columns is None else list(columns)
    missing = [c for c in [*columns, *(categorical or [])] if c not in df.columns]
    if missing:
        raise StatsInputError(f"column(s) {missing} are not in the table (columns: {list(df.columns)}).",
                              fix="check the spelling of the requested columns.")
    forced = set(categorical or [])
    parts = {g: df[df[group] == g] for g in groups}
    headers = {g: f"{g} (n={len(parts[g])})" for g in groups}
    blocks = [("Overall", df)] if overall else []
    blocks += [(headers[g], parts[g]) for g in groups]
    rows: list[dict[str, object]] = [{"variable": "n", "level": "", **{h: str(len(d)) for h, d in blocks},
                                      "p_value": np.nan, "test": ""}]
    tests: dict[str, str] = {}
    for col in columns:
        is_numeric = pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col])
        if is_numeric and col not in forced:
            result = _numeric_test([parts[g][col].dropna().to_numpy(float) for g in groups])
            name = f"{col}, median [IQR]" if numeric_summary == "median" else f"{col}, mean ± SD"
            rows.append({"variable": name, "level": "",
                         **{h: _numeric_cell(d[col], numeric_summary, digits) for h, d in blocks},
                         "p_value": result.p_value, "test": result.test})
        else:
            name = col
            levels = sorted(df[col].dropna().unique(), key=str)
            counts = np.array([[int((parts[g][col] == lv).sum()) for g in groups] for lv in levels])
            result = categorical_test(counts)
            for i, lv in enumerate(levels):
                rows.append({"variable": col, "level": str(lv),
                             **{h: _count_cell(d[col], lv, digits) for h, d in blocks},
                             "p_value": result.p_value if i == 0 else np.nan, "test": result.test if i == 0 else ""})
        if df[col].isna().any():
            rows.append({"variable": name, "level": "missing",
                         **{h: str(int(d[col].isna().sum())) for h, d in blocks}, "p_value": np.nan, "test": ""})
        tests[col] = result.test
    return CohortTable(table=pd.DataFrame(rows), tests=tests)


def _numeric_test(samples: list[np.ndarray]) -> TestResult:
    samples = [s for s in samples if s.size]
    if len(samples) < 2:
        return TestResult(test="", statistic=float("nan"), p_value=float("nan"))
    if len(samples) == 2:
        return mann_whitney(*samples)
    if np.unique(np.concatenate(samples)).size < 2:
        return TestResult(test=TEST_KRUSKAL, statistic=float("nan"), p_value=float("nan"))
    res = kruskal(*samples)
    return TestResult(test=TEST_KRUSKAL, statistic=float(res.statistic), p_value=float(res.pvalue))


def _numeric_cell(values: pd.Series, summary: str, digits: int) -> str:
    v = values.dropna().to_numpy(float)
    if v.size == 0:
        return "–"
    if summary == "mean":
        sd = np.std(v, ddof=1) if v.size > 1 else float("nan")
        return f"{np.mean(v):.{digits}f} ± {sd:.{digits}f}"
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return f"{med:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]"


def _count_cell(values: pd.Series, level: object, digits: int) -> str:
    present = values.dropna()
    k = int((present == level).sum())
    pct = 100 * k / present.size if present.size else float("nan")
    return f"{k} ({pct:.{digits}f}%)"
