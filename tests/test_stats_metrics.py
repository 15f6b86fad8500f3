"""Binomial CIs against R's binom.confint and diagnostic metrics against pROC's coords."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from alnvid.errors import StatsInputError
from alnvid.stats import (
    clopper_pearson_ci,
    decision_metrics,
    diagnostic_metrics,
    wilson_ci,
)

FIXTURES = Path(__file__).parent / "fixtures" / "proc_asah"


def test_binomial_cis_match_r():
    assert clopper_pearson_ci(18, 20) == (pytest.approx(0.6830172859809176, rel=1e-9),
                                          pytest.approx(0.9876514728297052, rel=1e-9))
    assert wilson_ci(18, 20) == (pytest.approx(0.6989663547715128, rel=1e-9),
                                 pytest.approx(0.972133518786232, rel=1e-9))
    assert clopper_pearson_ci(0, 30) == (0.0, pytest.approx(0.11570331, rel=1e-7))
    assert wilson_ci(0, 30) == (0.0, pytest.approx(0.11351339, rel=1e-7))
    assert clopper_pearson_ci(30, 30) == (pytest.approx(0.8842967, rel=1e-7), 1.0)
    assert np.isnan(wilson_ci(0, 0)[0])


def test_metrics_at_youden_point_of_s100b():
    df = pd.read_csv(FIXTURES / "aSAH.csv")
    y = (df.outcome == "Poor").astype(int)
    m = diagnostic_metrics(y, df.s100b, threshold=0.205)
    assert (m.sensitivity.numerator, m.sensitivity.denominator) == (26, 41)
    assert m.sensitivity.counts == "26/41"
    assert m.specificity.value == pytest.approx(0.805555555555556, rel=1e-9)
    assert m.ppv.value == pytest.approx(0.65) and m.npv.value == pytest.approx(0.794520547945205, rel=1e-9)
    assert m.accuracy.value == pytest.approx(0.743362831858407, rel=1e-9)
    assert (m.accuracy.ci_low, m.accuracy.ci_high) == clopper_pearson_ci(84, 113)
    expected = pd.read_csv(FIXTURES / "proc_coords_s100b_expected.csv")
    row = expected.loc[np.isclose(expected.threshold, 0.205)].iloc[0]
    assert m.lr_positive.value == pytest.approx(row.lr_pos, rel=1e-9)
    assert m.lr_negative.value == pytest.approx(row.lr_neg, rel=1e-9)
    assert m.f1.value == pytest.approx(2 * 0.65 * row.sensitivity / (0.65 + row.sensitivity), rel=1e-12)


def test_lr_log_ci_by_hand():
    # TP 26, FN 15, FP 14, TN 58: se(log LR+) = sqrt(1/26 - 1/41 + 1/14 - 1/72)
    m = decision_metrics([1] * 26 + [1] * 15 + [0] * 14 + [0] * 58, [1] * 26 + [0] * 15 + [1] * 14 + [0] * 58)
    se = np.sqrt(1 / 26 - 1 / 41 + 1 / 14 - 1 / 72)
    lr = (26 / 41) / (14 / 72)
    z = norm.ppf(0.975)
    assert m.lr_positive.ci_low == pytest.approx(lr * np.exp(-z * se), rel=1e-12)
    assert m.lr_positive.ci_high == pytest.approx(lr * np.exp(z * se), rel=1e-12)


def test_f1_ci_is_transformed_jaccard_ci():
    m = decision_metrics([1, 1, 1, 0, 0, 1], [1, 1, 0, 1, 0, 1])  # TP 3, FN 1, FP 1
    low, high = clopper_pearson_ci(3, 5)
    assert m.f1.value == pytest.approx(6 / 8)
    assert (m.f1.ci_low, m.f1.ci_high) == (pytest.approx(2 * low / (1 + low)), pytest.approx(2 * high / (1 + high)))


def test_no_false_positive_gives_infinite_lr_and_dict():
    m = decision_metrics([1, 1, 0, 0], [1, 0, 0, 0], method="wilson")
    assert m.lr_positive.value == np.inf and np.isnan(m.lr_positive.ci_low)
    assert m.specificity.to_dict() == {"name": "specificity", "value": 1.0, "numerator": 2, "denominator": 2,
                                       "ci_low": wilson_ci(2, 2)[0], "ci_high": 1.0, "method": "wilson",
                                       "counts": "2/2"}


def test_errors():
    with pytest.raises(StatsInputError, match="decisions"):
        decision_metrics([0, 1], [0, 0.5])
    with pytest.raises(StatsInputError, match="unknown CI method"):
        diagnostic_metrics([0, 1], [0.2, 0.7], method="exact")
