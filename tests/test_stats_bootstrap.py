"""Stratified bootstrap: equality with a naive loop, pROC's Monte-Carlo reference, paired tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alnvid.errors import StatsInputError
from alnvid.stats import (
    auc,
    bootstrap_auc_ci,
    bootstrap_aucs,
    bootstrap_test,
    bootstrap_test_unpaired,
    delong_test,
)

FIXTURES = Path(__file__).parent / "fixtures" / "proc_asah"



def test_vectorised_aucs_equal_naive_resampling(asah):
    y, s = asah.y.to_numpy(), asah.s100b.to_numpy()
    rng = np.random.default_rng(0)  # same draws, in the same order, as bootstrap_aucs(seed=0)
    cases, controls = s[y == 1], s[y == 0]
    case_idx = rng.integers(0, cases.size, size=(200, cases.size))
    control_idx = rng.integers(0, controls.size, size=(200, controls.size))
    labels = np.r_[np.ones(cases.size), np.zeros(controls.size)]
    naive = [auc(labels, np.r_[cases[i], controls[j]]) for i, j in zip(case_idx, control_idx)]
    np.testing.assert_allclose(bootstrap_aucs(y, s, n_boot=200, seed=0), naive, rtol=1e-12)


def test_s100b_ci_near_proc(asah):
    ci = bootstrap_auc_ci(asah.y, asah.s100b, n_boot=2000, seed=1)
    assert ci.auc == pytest.approx(0.73136856368563685, rel=1e-12)
    assert ci.ci_low == pytest.approx(0.63, abs=0.02)
    assert ci.ci_high == pytest.approx(0.83, abs=0.02)
    assert ci.se == pytest.approx(0.0517, abs=0.004)  # DeLong SD of this AUC


def test_seeded_and_reproducible(asah):
    a = bootstrap_aucs(asah.y, asah.ndka, n_boot=100, seed=7)
    np.testing.assert_array_equal(a, bootstrap_aucs(asah.y, asah.ndka, n_boot=100, seed=7))
    assert not np.array_equal(a, bootstrap_aucs(asah.y, asah.ndka, n_boot=100, seed=8))


def test_paired_test_close_to_delong(asah):
    boot = bootstrap_test(asah.y, asah.wfns, asah.s100b, n_boot=2000, seed=0)
    delong = delong_test(asah.y, asah.wfns, asah.s100b)
    assert boot.difference == pytest.approx(delong.difference, rel=1e-12)
    assert boot.statistic == pytest.approx(delong.statistic, abs=0.25)
    assert 0.005 < boot.p_value < 0.08
    assert boot.ci_low < boot.difference < boot.ci_high


def test_identical_models_d0_p1(asah):
    test = bootstrap_test(asah.y, asah.wfns, asah.wfns, n_boot=200)
    assert (test.statistic, test.p_value, test.ci_low, test.ci_high) == (0.0, 1.0, 0.0, 0.0)


def test_unpaired_near_delong_unpaired(asah):
    test = bootstrap_test_unpaired(asah.y, asah.wfns, asah.y, asah.s100b, n_boot=2000, seed=0)
    assert test.statistic == pytest.approx(1.4349, abs=0.2)
    assert not test.paired


def test_perfect_separation_and_all_tied():
    y = np.array([0, 0, 0, 1, 1, 1])
    perfect = bootstrap_auc_ci(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], n_boot=100)
    assert (perfect.auc, perfect.ci_low, perfect.ci_high, perfect.se) == (1.0, 1.0, 1.0, 0.0)
    tied = bootstrap_auc_ci(y, np.zeros(6), n_boot=100)
    assert (tied.ci_low, tied.ci_high) == (0.5, 0.5)


def test_errors():
    with pytest.raises(StatsInputError, match="at least 2 of each"):
        bootstrap_auc_ci([0, 0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(StatsInputError, match="n_boot"):
        bootstrap_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], n_boot=0)
