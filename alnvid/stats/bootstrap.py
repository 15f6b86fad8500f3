"""pROC's stratified bootstrap of the AUC: percentile CI and paired / unpaired tests of two AUCs.

Cases and controls are resampled separately, each to its own size (pROC ``stratified = TRUE``), so
every resample keeps the study's prevalence and has an AUC. The direction stays fixed (higher score
= case). All resamples are evaluated at once: controls are counted per resample and sorted once,
so each resampled AUC costs O(n) instead of a sort, and resamples are processed in memory-bounded
chunks. Results depend only on ``seed`` (numpy's PCG64 Generator), not on R's generator, so they
match pROC's to Monte-Carlo precision, not digit for digit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from alnvid.errors import StatsInputError
from alnvid.stats._checks import as_scores, check_binary, check_level
from alnvid.stats.roc import auc

DEFAULT_N_BOOT = 2000
_CHUNK_ELEMENTS = 2_000_000  # resampled indices held in memory at once (~16 MB per int64 array)


def _check_n_boot(n_boot: int) -> int:
    if int(n_boot) < 10:
        raise StatsInputError(f"n_boot must be at least 10, got {n_boot}.",
                              fix="use the default of 2000 resamples (pROC's default) or more.")
    return int(n_boot)


def _resampled_aucs(case_scores: np.ndarray, control_scores: np.ndarray, case_idx: np.ndarray,
                    control_idx: np.ndarray) -> np.ndarray:
    """AUC of each resample (row) of case/control indices: mean over resampled cases of their placement."""
    n_rows, n_ctrl = control_idx.shape
    order = np.argsort(control_scores, kind="stable")
    sorted_controls = control_scores[order]
    sorted_pos = np.empty(n_ctrl, dtype=np.int64)
    sorted_pos[order] = np.arange(n_ctrl)
    flat = sorted_pos[control_idx] + n_ctrl * np.arange(n_rows)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n_rows * n_ctrl).reshape(n_rows, n_ctrl)
    below = np.zeros((n_rows, n_ctrl + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, out=below[:, 1:])  # below[b, j]: resampled controls among the j lowest
    lo = np.searchsorted(sorted_controls, case_scores, side="left")
    hi = np.searchsorted(sorted_controls, case_scores, side="right")
    placement = (below[:, lo] + below[:, hi]) / (2.0 * n_ctrl)  # controls lower + 1/2 tied, per case
    return np.take_along_axis(placement, case_idx, axis=1).mean(axis=1)


def _bootstrap_matrix(labels: np.ndarray, score_rows: np.ndarray, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(n_boot, k) AUCs of k models under the same stratified resamples (paired)."""
    is_case = labels.astype(bool)
    cases, controls = score_rows[:, is_case], score_rows[:, ~is_case]
    m, n = cases.shape[1], controls.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // (m + n))
    out = np.empty((n_boot, score_rows.shape[0]))
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        case_idx = rng.integers(0, m, size=(rows, m))
        control_idx = rng.integers(0, n, size=(rows, n))
        for k in range(score_rows.shape[0]):
            out[start:start + rows, k] = _resampled_aucs(cases[k], controls[k], case_idx, control_idx)
    return out


def bootstrap_aucs(labels: ArrayLike, scores: ArrayLike, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> np.ndarray:
    """AUCs of `n_boot` stratified bootstrap resamples (cases and controls resampled separately)."""
    y, s = check_binary(labels, scores, min_per_class=2)
    return _bootstrap_matrix(y, s[None, :], _check_n_boot(n_boot), np.random.default_rng(seed))[:, 0]


@dataclass(frozen=True)
class BootstrapCI:
    """AUC with a percentile bootstrap CI (R's type-7 quantile, as pROC) and the bootstrap SD."""

    auc: float
    se: float
    ci_low: float
    ci_high: float
    level: float
    n_boot: int
    seed: int
    method: str = "bootstrap-percentile-stratified"

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def bootstrap_auc_ci(labels: ArrayLike, scores: ArrayLike, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                     level: float = 0.95) -> BootstrapCI:
    """pROC's ``ci.auc(method = "bootstrap")``: stratified resamples, percentile interval."""
    level = check_level(level)
    y, s = check_binary(labels, scores)
    boots = bootstrap_aucs(y, s, n_boot, seed)
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return BootstrapCI(auc=auc(y, s), se=float(np.std(boots, ddof=1)), ci_low=float(low), ci_high=float(high),
                       level=level, n_boot=int(n_boot), seed=int(seed))


@dataclass(frozen=True)
class BootstrapTest:
    """Bootstrap comparison of AUC1 - AUC2: ``D = diff / sd(bootstrap diffs)``, normal p (pROC)."""

    auc1: float
    auc2: float
    difference: float
    statistic: float
    p_value: float
    p_greater: float
    p_less: float
    ci_low: float
    ci_high: float
    level: float
    n_boot: int
    seed: int
    paired: bool
    method: str

    def to_dict(self) -> dict[str, float | int | bool | str]:
        return asdict(self)


def _test_from_diffs(auc1: float, auc2: float, diffs: np.ndarray, level: float, n_boot: int, seed: int,
                     paired: bool) -> BootstrapTest:
    diff = auc1 - auc2
    sd = float(np.std(diffs, ddof=1))
    d = diff / sd if sd > 0 else (0.0 if diff == 0 else float(np.copysign(np.inf, diff)))
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return BootstrapTest(auc1=auc1, auc2=auc2, difference=diff, statistic=float(d),
                         p_value=float(min(1.0, 2 * norm.sf(abs(d)))), p_greater=float(norm.sf(d)),
                         p_less=float(norm.cdf(d)), ci_low=float(low), ci_high=float(high), level=level,
                         n_boot=n_boot, seed=seed, paired=paired,
                         method="bootstrap-paired" if paired else "bootstrap-unpaired")


def bootstrap_test(labels: ArrayLike, scores1: ArrayLike, scores2: ArrayLike, n_boot: int = DEFAULT_N_BOOT,
                   seed: int = 0, level: float = 0.95) -> BootstrapTest:
    """Paired bootstrap test of two AUCs on the same patients (both models share every resample)."""
    level, n_boot = check_level(level), _check_n_boot(n_boot)
    s1, s2 = as_scores(scores1, "scores1"), as_scores(scores2, "scores2")
    if s1.shape != s2.shape:
        raise StatsInputError(f"paired test needs the same patients: `scores1` has {s1.size} values, "
                              f"`scores2` has {s2.size}.", fix="align both models on the same patients, "
                              "or use bootstrap_test_unpaired for independent test sets.")
    y, _ = check_binary(labels, s1, scores_name="scores1", min_per_class=2)
    boots = _bootstrap_matrix(y, np.stack([s1, s2]), n_boot, np.random.default_rng(seed))
    return _test_from_diffs(auc(y, s1), auc(y, s2), boots[:, 0] - boots[:, 1], level, n_boot, int(seed), True)


def bootstrap_test_unpaired(labels1: ArrayLike, scores1: ArrayLike, labels2: ArrayLike, scores2: ArrayLike,
                            n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = 0.95) -> BootstrapTest:
    """Unpaired bootstrap test: each test set resampled independently (pROC ``paired = FALSE``)."""
    level, n_boot = check_level(level), _check_n_boot(n_boot)
    y1, s1 = check_binary(labels1, scores1, scores_name="scores1", labels_name="labels1", min_per_class=2)
    y2, s2 = check_binary(labels2, scores2, scores_name="scores2", labels_name="labels2", min_per_class=2)
    rng = np.random.default_rng(seed)
    boots1 = _bootstrap_matrix(y1, s1[None, :], n_boot, rng)[:, 0]
    boots2 = _bootstrap_matrix(y2, s2[None, :], n_boot, rng)[:, 0]
    return _test_from_diffs(auc(y1, s1), auc(y2, s2), boots1 - boots2, level, n_boot, int(seed), False)
