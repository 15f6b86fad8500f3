"""Table 1: Mann–Whitney against R's wilcox.test, test choice, and the table's content."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency, fisher_exact, kruskal, mannwhitneyu, norm

from alnvid.errors import StatsInputError
from alnvid.stats import cohort_table, mann_whitney

X = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46]
Y = [1.15, 0.88, 0.90, 0.74, 1.21]
FIXTURES = Path(__file__).parent / "fixtures" / "proc_asah"


def test_mann_whitney_exact_matches_r():
    res = mann_whitney(np.array(X), np.array(Y))
    assert res.statistic == 35
    assert res.p_value == pytest.approx(0.2544122544123, rel=1e-9)


def test_mann_whitney_with_ties_uses_continuity_corrected_normal():
    assert mannwhitneyu(X, Y, method="asymptotic").pvalue == pytest.approx(0.244623605127, rel=1e-9)  # R, no ties
    x, y = np.array(X + [1.15]), np.array(Y)  # a tie with y: R switches to the tie-corrected normal approximation
    res = mann_whitney(x, y)
    n1, n2 = x.size, y.size
    _, counts = np.unique(np.r_[x, y], return_counts=True)
    var = n1 * n2 / 12 * ((n1 + n2 + 1) - np.sum(counts**3 - counts) / ((n1 + n2) * (n1 + n2 - 1)))
    z = (abs(res.statistic - n1 * n2 / 2) - 0.5) / np.sqrt(var)
    assert res.statistic == 38.5  # 35 + 3 controls below 1.15 + 1/2 tie
    assert res.p_value == pytest.approx(2 * norm.sf(z), rel=1e-12)


def test_table_on_asah():
    df = pd.read_csv(FIXTURES / "aSAH.csv")[["outcome", "gender", "age", "wfns"]]
    table = cohort_table(df, "outcome", categorical=["wfns"])
    t = table.table.set_index(["variable", "level"])
    assert list(table.table.columns) == ["variable", "level", "Overall", "Good (n=72)", "Poor (n=41)", "p_value",
                                         "test"]
    assert t.loc[("n", ""), "Poor (n=41)"] == "41"
    assert t.loc[("gender", "Female"), "Good (n=72)"] == "50 (69.4%)"
    good, poor = df[df.outcome == "Good"].age, df[df.outcome == "Poor"].age
    assert t.loc[("age, median [IQR]", ""), "p_value"] == pytest.approx(mann_whitney(good, poor).p_value)
    q1, med, q3 = np.quantile(poor, [0.25, 0.5, 0.75])
    assert t.loc[("age, median [IQR]", ""), "Poor (n=41)"] == f"{med:.1f} [{q1:.1f}, {q3:.1f}]"
    sex = pd.crosstab(df.gender, df.outcome).to_numpy()
    assert t.loc[("gender", "Female"), "p_value"] == pytest.approx(chi2_contingency(sex, correction=True)[1])
    assert table.tests == {"gender": "Pearson chi-square (Yates)", "age": "Mann–Whitney U",
                           "wfns": "Pearson chi-square"}


def test_fisher_kruskal_mean_and_missing():
    df = pd.DataFrame({"split": ["a"] * 6 + ["b"] * 6, "node": [1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0],
                       "size": [10, 12, 14, 9, np.nan, 11, 8, 7, 9, 6, 5, 7.5]})
    table = cohort_table(df, "split", categorical=["node"], numeric_summary="mean", overall=False)
    t = table.table.set_index(["variable", "level"])
    assert table.tests["node"] == "Fisher exact"
    assert t.loc[("node", "0"), "p_value"] == pytest.approx(fisher_exact([[3, 5], [3, 1]]).pvalue)
    assert t.loc[("size, mean ± SD", "missing"), "a (n=6)"] == "1"
    assert t.loc[("size, mean ± SD", ""), "a (n=6)"] == f"{np.mean([10, 12, 14, 9, 11]):.1f} ± " \
                                                         f"{np.std([10, 12, 14, 9, 11], ddof=1):.1f}"
    df["split"] = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    three = cohort_table(df, "split", columns=["size"])
    sizes = [g["size"].dropna() for _, g in df.groupby("split")]
    assert three.table.iloc[1]["p_value"] == pytest.approx(kruskal(*sizes).pvalue)
    assert three.tests == {"size": "Kruskal–Wallis"}


def test_errors():
    df = pd.DataFrame({"split": ["a", "a"], "age": [1, 2]})
    with pytest.raises(StatsInputError, match="single value"):
        cohort_table(df, "split")
    with pytest.raises(StatsInputError, match="not in the table"):
        cohort_table(df, "site")
