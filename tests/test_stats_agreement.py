"""McNemar and kappa against R / SAS values; Fleiss' kappa against Fleiss (1971) and Scott's pi."""
from __future__ import annotations

import numpy as np
import pytest

from alnvid.errors import StatsInputError
from alnvid.stats import (
    cohen_kappa,
    cohen_kappa_table,
    fleiss_kappa,
    fleiss_kappa_counts,
    mcnemar,
    mcnemar_table,
)


def test_mcnemar_matches_r():
    res = mcnemar_table([[23, 15], [19, 31]])
    assert res.statistic == pytest.approx(0.470588235294118, rel=1e-9)
    assert res.p_value == pytest.approx(0.492716677227088, rel=1e-9)
    assert res.p_value_corrected == pytest.approx(0.606905427217951, rel=1e-9)
    assert res.p_value_exact == pytest.approx(0.60759136127308, rel=1e-9)


def test_mcnemar_from_decisions_and_identical_raters():
    d1 = np.array([1] * 23 + [1] * 15 + [0] * 19 + [0] * 31)
    d2 = np.array([1] * 23 + [0] * 15 + [1] * 19 + [0] * 31)
    assert mcnemar(d1, d2) == mcnemar_table([[23, 15], [19, 31]])
    same = mcnemar(d1, d1)
    assert (same.statistic, same.p_value, same.p_value_exact) == (0.0, 1.0, 1.0)


def test_kappa_3x3_matches_sas():
    res = cohen_kappa_table([[0, 4, 1], [0, 8, 0], [0, 1, 5]])
    assert res.kappa == pytest.approx(0.4842, abs=5e-5)
    assert res.se == pytest.approx(0.1380, abs=5e-5)
    assert (res.ci_low, res.ci_high) == (pytest.approx(0.2137, abs=5e-5), pytest.approx(0.7547, abs=5e-5))
    assert res.se_null == pytest.approx(0.1484, abs=5e-5)
    assert res.z == pytest.approx(3.2626, abs=5e-5)
    assert res.p_value == pytest.approx(0.0011, abs=5e-5)


def test_weighted_kappa_linear_matches_sas():
    # SAS PROC FREQ weighted kappa (Cicchetti-Allison) of the same table, as quoted in statsmodels' tests
    res = cohen_kappa_table([[0, 4, 1], [0, 8, 0], [0, 1, 5]], weights="linear")
    assert res.kappa == pytest.approx(0.4701, abs=5e-5)
    assert res.se == pytest.approx(0.1457, abs=5e-5)
    assert (res.ci_low, res.ci_high) == (pytest.approx(0.1845, abs=5e-5), pytest.approx(0.7558, abs=5e-5))


def test_kappa_2x2_matches_statpsych():
    res = cohen_kappa_table([[31, 12], [4, 58]])
    assert res.kappa == pytest.approx(0.6756757, rel=1e-7)
    assert res.se == pytest.approx(0.07344761, rel=1e-7)
    assert (res.ci_low, res.ci_high) == (pytest.approx(0.5317210, rel=1e-7), pytest.approx(0.8196303, rel=1e-7))


def test_quadratic_weighted_kappa_equals_independent_formula():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 5, 60)
    b = np.clip(a + rng.integers(-1, 2, 60), 1, 4)
    res = cohen_kappa(a, b, weights="quadratic", categories=[1, 2, 3, 4])
    # quadratic weighted kappa = 1 - sum w_d O / sum w_d E with disagreement weights (i - j)^2
    obs = np.zeros((4, 4))
    np.add.at(obs, (a - 1, b - 1), 1)
    exp = np.outer(obs.sum(1), obs.sum(0)) / obs.sum()
    w = np.subtract.outer(np.arange(4), np.arange(4)) ** 2
    assert res.kappa == pytest.approx(1 - (w * obs).sum() / (w * exp).sum(), rel=1e-12)


def test_fleiss_kappa_fleiss_1971_example():
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    res = fleiss_kappa_counts(counts)
    # category totals 20, 28, 39, 21, 32 of 140 ratings: P_e = 4170 / 19600; kappa 0.210 (Fleiss 1971, Wikipedia)
    p_e = 4170 / 19600
    assert res.kappa == pytest.approx(0.20993, abs=5e-6)
    assert res.kappa * (1 - p_e) + p_e == pytest.approx(0.37802, abs=5e-6)  # P-bar
    assert (res.n_subjects, res.n_raters, res.n_categories) == (10, 14, 5)


def test_fleiss_two_raters_is_scotts_pi():
    rng = np.random.default_rng(1)
    r = rng.integers(0, 3, size=(40, 2))
    r[:25, 1] = r[:25, 0]
    p_obs = np.mean(r[:, 0] == r[:, 1])
    pooled = np.bincount(r.ravel(), minlength=3) / r.size
    pi = (p_obs - np.sum(pooled**2)) / (1 - np.sum(pooled**2))
    assert fleiss_kappa(r).kappa == pytest.approx(pi, rel=1e-12)


def test_errors():
    with pytest.raises(StatsInputError, match="undefined"):
        cohen_kappa([1, 1, 1], [1, 1, 1], categories=[0, 1])
    with pytest.raises(StatsInputError, match="not in the categories"):
        cohen_kappa([1, 2], [1, 3], categories=[1, 2])
    with pytest.raises(StatsInputError, match="2x2"):
        mcnemar_table([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(StatsInputError, match="equal length"):
        mcnemar([0, 1], [0, 1, 1])
