"""DeLong variance, CIs and paired/unpaired tests against pROC's own expected values."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alnvid.errors import StatsInputError
from alnvid.stats import delong_ci, delong_covariance, delong_test, delong_test_unpaired

FIXTURES = Path(__file__).parent / "fixtures" / "proc_asah"
REL = 1e-9



def test_variance_and_covariance_match_proc(asah):
    est = delong_covariance(asah.y, [asah.wfns, asah.ndka, asah.s100b])
    np.testing.assert_allclose(est.aucs, [0.823678861788618, 0.611957994579946, 0.73136856368563685], rtol=REL)
    expected = np.array([
        [0.00146991470882363, -0.000532967856762438, 0.00119615567376754],
        [-0.000532967856762438, 0.0031908105493913, -0.000756164938056579],
        [0.00119615567376754, -0.000756164938056579, 0.00266868245717244],
    ])
    np.testing.assert_allclose(est.covariance, expected, rtol=REL)
    assert (est.n_cases, est.n_controls) == (41, 72)


def _placements_variance(y: np.ndarray, s: np.ndarray) -> float:
    """Textbook O(m n) DeLong variance, independent of the mid-rank algorithm."""
    cases, controls = s[y == 1], s[y == 0]
    psi = (cases[:, None] > controls[None, :]) + 0.5 * (cases[:, None] == controls[None, :])
    return psi.mean(axis=1).var(ddof=1) / cases.size + psi.mean(axis=0).var(ddof=1) / controls.size


def test_fast_algorithm_equals_direct_placements():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # many ties
    assert delong_covariance(y, s).covariance[0, 0] == pytest.approx(_placements_variance(y, s), rel=1e-12)


@pytest.mark.parametrize("marker, low, high", [("ndka", 0.501244999271703, 0.722670989888189),
                                               ("s100b", 0.630118211761623, 0.832618915609651)])
def test_ci_matches_proc(asah, marker, low, high):
    ci = delong_ci(asah.y, asah[marker])
    assert (ci.ci_low, ci.ci_high) == (pytest.approx(low, rel=REL), pytest.approx(high, rel=REL))


def test_ci_women_only(asah):
    women = asah[asah.gender == "Female"]
    ci = delong_ci(women.y, women.ndka)
    assert ci.auc == pytest.approx(0.6671428571, rel=1e-9)
    assert ci.ci_low == pytest.approx(0.5261398281, rel=1e-9)
    assert ci.ci_high == pytest.approx(0.8081458862, rel=1e-9)


def test_ci_wfns_derived(asah):
    ci = delong_ci(asah.y, asah.wfns)
    assert (ci.ci_low, ci.ci_high) == (pytest.approx(0.7485349, abs=5e-8), pytest.approx(0.8988228, abs=5e-8))


@pytest.mark.parametrize("m1, m2, z, p, low, high", [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
])
def test_paired_test_matches_proc(asah, m1, m2, z, p, low, high):
    test = delong_test(asah.y, asah[m1], asah[m2])
    assert test.statistic == pytest.approx(z, rel=REL)
    assert test.p_value == pytest.approx(p, rel=REL)
    assert (test.ci_low, test.ci_high) == (pytest.approx(low, rel=REL), pytest.approx(high, rel=REL))
    assert test.paired and test.df is None


def test_paired_one_sided_and_swap(asah):
    test = delong_test(asah.y, asah.wfns, asah.s100b)
    assert test.p_greater == pytest.approx(0.0135878911145941, rel=REL)
    assert test.p_less == pytest.approx(0.986412108885406, rel=REL)
    swapped = delong_test(asah.y, asah.s100b, asah.wfns)
    assert swapped.statistic == pytest.approx(-test.statistic, rel=1e-12)
    assert swapped.p_value == pytest.approx(test.p_value, rel=1e-12)


def test_identical_models_give_z0_p1(asah):
    test = delong_test(asah.y, asah.wfns, asah.wfns)
    assert (test.statistic, test.p_value, test.difference) == (0.0, 1.0, 0.0)
    # a monotone transform ranks patients identically: same AUC, zero-variance difference
    test = delong_test(asah.y, asah.s100b, np.log(asah.s100b))
    assert (test.statistic, test.p_value) == (0.0, 1.0)


@pytest.mark.parametrize("m1, m2, d, p", [("wfns", "s100b", 1.43490640926908, 0.152825378808796),
                                          ("wfns", "ndka", 3.10125096778969, 0.00220950791756457),
                                          ("ndka", "s100b", -1.55995743389685, 0.120192832430845)])
def test_unpaired_test_matches_proc(asah, m1, m2, d, p):
    test = delong_test_unpaired(asah.y, asah[m1], asah.y, asah[m2])
    assert test.statistic == pytest.approx(d, rel=REL)
    assert test.p_value == pytest.approx(p, rel=REL)
    assert not test.paired and test.df > 100


def test_unpaired_one_sided(asah):
    test = delong_test_unpaired(asah.y, asah.wfns, asah.y, asah.s100b)
    assert test.p_greater == pytest.approx(0.076412689404398, rel=REL)


def test_perfect_separation_and_all_tied():
    y = np.array([0, 0, 0, 1, 1, 1])
    perfect = delong_ci(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert (perfect.auc, perfect.se, perfect.ci_low, perfect.ci_high) == (1.0, 0.0, 1.0, 1.0)
    tied = delong_ci(y, np.full(6, 0.4))
    assert (tied.auc, tied.se) == (0.5, 0.0)
    test = delong_test(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], np.full(6, 0.4))
    assert test.difference == 0.5 and test.statistic == np.inf and test.p_value == 0.0
    both_perfect = delong_test(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [1, 2, 3, 4, 5, 6])
    assert (both_perfect.statistic, both_perfect.p_value) == (0.0, 1.0)


@pytest.mark.parametrize("labels", [[0, 0, 0, 1], [1, 1, 1, 0]])
def test_single_case_or_control_raises(labels):
    with pytest.raises(StatsInputError, match="at least 2 of each"):
        delong_ci(labels, [0.1, 0.5, 0.9, 0.6])


def test_bad_input_errors(asah):
    with pytest.raises(StatsInputError, match="only negative"):
        delong_ci([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(StatsInputError, match="NaN"):
        delong_test([0, 1, 1], [0.1, 0.2, 0.3], [0.1, np.nan, 0.3])
    with pytest.raises(StatsInputError, match="same patients"):
        delong_test([0, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.3])
