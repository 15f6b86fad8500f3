"""ROC, AUC, coords and operating points against pROC's aSAH reference values."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alnvid.errors import StatsInputError
from alnvid.stats import (
    auc,
    average_precision,
    coords,
    operating_point,
    pr_curve,
    roc_curve,
    youden_point,
)

FIXTURES = Path(__file__).parent / "fixtures" / "proc_asah"



@pytest.mark.parametrize("marker, expected", [("wfns", 0.823678861788618), ("ndka", 0.611957994579946),
                                              ("s100b", 0.73136856368563685)])
def test_auc_matches_proc(asah, marker, expected):
    assert auc(asah.y, asah[marker]) == pytest.approx(expected, rel=1e-9)


def test_coords_reproduce_proc_all_columns(asah):
    expected = pd.read_csv(FIXTURES / "proc_coords_s100b_expected.csv")
    ours = coords(asah.y, asah.s100b).to_frame()
    assert list(ours.columns) == list(expected.columns)
    assert len(ours) == len(expected) == 51
    for column in expected.columns:
        np.testing.assert_allclose(ours[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-9,
                                   atol=1e-12, equal_nan=True, err_msg=column)


def test_youden_point_matches_proc(asah):
    best = youden_point(asah.y, asah.s100b)
    assert best.threshold == pytest.approx(0.205, rel=1e-9)
    assert (best.tp, best.fp, best.tn, best.fn) == (26, 14, 58, 15)
    assert best.sensitivity == pytest.approx(0.634146341463415, rel=1e-9)
    assert best.specificity == pytest.approx(0.805555555555556, rel=1e-9)
    assert best.ppv == pytest.approx(0.65, rel=1e-9)
    assert best.npv == pytest.approx(0.794520547945205, rel=1e-9)
    assert best.accuracy == pytest.approx(0.743362831858407, rel=1e-9)


def test_operating_point_uses_greater_or_equal():
    point = operating_point([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9], threshold=0.5)
    assert (point.tp, point.fp, point.tn, point.fn) == (2, 1, 1, 0)


def test_roc_curve_area_equals_mann_whitney_auc(asah):
    curve = roc_curve(asah.y, asah.s100b)
    assert (curve.fpr[0], curve.tpr[0], curve.fpr[-1], curve.tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(curve.thresholds) < 0)
    assert np.trapezoid(curve.tpr, curve.fpr) == pytest.approx(curve.auc, rel=1e-12)
    assert curve.auc == pytest.approx(0.73136856368563685, rel=1e-9)


def test_ties_count_half():
    assert auc([0, 1], [0.3, 0.3]) == 0.5
    assert auc([0, 0, 1, 1], [1, 1, 1, 1]) == 0.5
    assert auc([0, 1, 0, 1], [0.1, 0.2, 0.2, 0.9]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_auc_direction_is_never_flipped():
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0


def test_average_precision_by_hand():
    # ranked: 0.9 (1), 0.8 (0), 0.7 (1), 0.1 (0): AP = 1/2*1 + 1/2*(2/3)
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 1 / 3)
    curve = pr_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    np.testing.assert_allclose(curve.precision, [1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1, 1])


@pytest.mark.parametrize("labels, scores, message", [
    ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
    ([0, 1, 2], [0.1, 0.2, 0.3], "only 0 and 1"),
    ([1, 1, 1], [0.1, 0.2, 0.3], "only positive"),
    ([0, 0], [0.1, 0.2], "only negative"),
    ([0, 1, 1], [0.1, 0.2], "3 values"),
])
def test_bad_input_raises_clear_error(labels, scores, message):
    with pytest.raises(StatsInputError, match=message):
        auc(labels, scores)
