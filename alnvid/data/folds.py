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
    problem = folds_problem(table, num_folds)
    if problem:
        raise AlnvidError(problem, fix=folds_fix(table))
    patients = table.groupby("patient_id", sort=True)["label"].agg(["max", "size"])
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


def patients_per_class(table: pd.DataFrame) -> tuple[int, int]:
    """Patients without and with metastasis (a patient counts as positive when any of its videos is)."""
    patients = table.groupby("patient_id")["label"].max()
    return int((patients == 0).sum()), int((patients == 1).sum())


def folds_problem(table: pd.DataFrame, num_folds: int) -> str | None:
    """Why `table` cannot be split into `num_folds` patient-grouped folds holding both classes, or None."""
    if num_folds < 2:
        return f"cross-validation needs at least 2 folds (got {num_folds})"
    negatives, positives = patients_per_class(table)
    if min(negatives, positives) < num_folds:
        return (f"{num_folds}-fold cross-validation needs at least {num_folds} patients of each class in the "
                f"train/val rows, which have {positives} with label 1 and {negatives} with label 0")
    return None


def folds_fix(table: pd.DataFrame) -> str:
    """What to do when the folds cannot be formed: the largest fold count the data allow, if any."""
    most = min(patients_per_class(table))
    if most >= 2:
        return f"use --folds {most} or fewer (every fold needs a patient of each class), or add patients."
    return "add patients to the train/val rows: cross-validation needs at least 2 of each class."


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
