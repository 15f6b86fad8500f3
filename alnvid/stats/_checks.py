"""Input validation shared by the statistics modules: one clear StatsInputError per problem."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from alnvid.errors import StatsInputError


def as_labels(labels: ArrayLike, name: str = "labels") -> np.ndarray:
    """Return `labels` as an int array of 0/1, or raise naming the offending values."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise StatsInputError(f"`{name}` must be a non-empty 1-D array, got shape {arr.shape}.",
                              fix=f"pass one 0/1 label per patient in `{name}`.")
    try:
        values = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise StatsInputError(f"`{name}` holds non-numeric values such as {arr[:3].tolist()}.",
                              fix=f"encode `{name}` as 0 (negative) / 1 (positive, e.g. metastasis).") from None
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        examples = np.unique(arr[bad])[:5].tolist()
        raise StatsInputError(f"`{name}` must contain only 0 and 1; found {examples} at {int(bad.sum())} position(s).",
                              fix=f"encode `{name}` as 0 (negative) / 1 (positive) and drop missing labels.")
    return values.astype(np.int64)


def as_scores(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    """Return `scores` as a finite float64 array, or raise naming how many are NaN/inf."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise StatsInputError(f"`{name}` holds non-numeric values.",
                              fix=f"pass one numeric score per patient in `{name}`.") from None
    if arr.ndim != 1 or arr.size == 0:
        raise StatsInputError(f"`{name}` must be a non-empty 1-D array, got shape {arr.shape}.",
                              fix=f"pass one score per patient in `{name}`.")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.flatnonzero(bad)[:5].tolist()
        raise StatsInputError(f"`{name}` has {int(bad.sum())} NaN/infinite value(s) (positions {first}).",
                              fix=f"remove those patients or fill in their `{name}` before computing statistics.")
    return arr


def check_binary(labels: ArrayLike, scores: ArrayLike, *, scores_name: str = "scores",
                 labels_name: str = "labels", min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (labels, scores) pair: same length, finite scores, `min_per_class` of each class."""
    y = as_labels(labels, labels_name)
    s = as_scores(scores, scores_name)
    if y.shape != s.shape:
        raise StatsInputError(f"`{labels_name}` has {y.size} values but `{scores_name}` has {s.size}.",
                              fix="pass exactly one label and one score per patient, in the same order.")
    require_both_classes(y, labels_name, min_per_class)
    return y, s


def require_both_classes(labels: np.ndarray, name: str = "labels", min_per_class: int = 1) -> None:
    """Raise unless `labels` holds at least `min_per_class` positives and negatives."""
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "positive (1)" if n_pos else "negative (0)"
        raise StatsInputError(f"`{name}` contains only {only} patients ({labels.size} of them); "
                              "ROC/AUC statistics need at least one case and one control.",
                              fix="evaluate on a set that includes both metastatic and non-metastatic patients.")
    if min(n_pos, n_neg) < min_per_class:
        raise StatsInputError(f"`{name}` has {n_pos} case(s) and {n_neg} control(s); a variance or confidence "
                              f"interval of the AUC needs at least {min_per_class} of each.",
                              fix=f"evaluate on a larger set, with at least {min_per_class} cases and "
                                  f"{min_per_class} controls.")


def check_level(level: float) -> float:
    """Return a confidence level strictly between 0 and 1."""
    if not 0.0 < level < 1.0:
        raise StatsInputError(f"confidence level must be between 0 and 1, got {level}.",
                              fix="pass e.g. level=0.95 for a 95% interval.")
    return float(level)
