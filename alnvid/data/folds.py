"""Patient-grouped, label-stratified splits: no patient is ever on both sides of a split."""
from __future__ import annotations

import numpy as np
import pandas as pd

from alnvid.errors import AlnvidError


def patient_folds(table: pd.DataFrame, num_folds: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) of each row, stratified by label and grouped by `patient_id`.

    Patients of each class are shuffled (seeded) and dealt one by one to the fold that holds the fewest videos
    of that class so far, so folds are balanced in class mix and size even when patients have several videos.
    """
    if num_folds < 2:
        raise AlnvidError(f"--folds must be at least 2 (got {num_folds})")
    patients = table.groupby("patient_id", sort=True)["label"].agg(["max", "size"])
    for label in (0, 1):
        n = int((patients["max"] == label).sum())
        if n < num_folds:
            raise AlnvidError(
                f"only {n} patient(s) with label {label} for {num_folds} folds: every fold needs both classes",
                fix="use fewer folds or add patients.",
            )
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for label in (0, 1):
        members = patients[patients["max"] == label]
        order = rng.permutation(len(members))
        load = np.zeros(num_folds)
        for i in order:
            fold = int(np.argmin(load + 1e-9 * np.arange(num_folds)))
            fold_of[members.index[i]] = fold
            load[fold] += members["size"].iloc[i]
    return table["patient_id"].map(fold_of).to_numpy()


def holdout(table: pd.DataFrame, fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of rows held out: round(fraction x patients) of each class (at least one), grouped by patient."""
    if not 0 < fraction < 1:
        raise AlnvidError(f"hold-out fraction must be between 0 and 1 (got {fraction})")
    patients = table.groupby("patient_id", sort=True)["label"].max()
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for label in (0, 1):
        members = patients.index[patients == label]
        if len(members) < 2:
            raise AlnvidError(f"only {len(members)} patient(s) with label {label}: cannot hold some out and keep "
                              "both classes on each side", fix="add patients or give explicit splits.")
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.update(members[rng.permutation(len(members))[:count]])
    return table["patient_id"].isin(held).to_numpy()
