"""Turn someone else's cohort table into an alnvid manifest (column mapping, paths, held-out test splits)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from alnvid.data.folds import holdout
from alnvid.errors import AlnvidError
from alnvid.utils import atomic_write_csv

POCUS_COLUMNS = {"patient_id": "patient_id", "path": "file", "label": "label", "site": "source_id"}


def import_manifest(
    source: str | Path,
    destination: str | Path,
    columns: dict[str, str],
    *,
    test_fraction: float = 0.0,
    external_site: str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Write an alnvid manifest from `source`, renaming `columns` (ours -> theirs) and keeping all other columns.

    Paths become absolute, so the new manifest can live anywhere. Rows of `external_site` become `test_b`
    (an external test set, as the study's second hospital); `test_fraction` of the remaining patients
    become `test_a` (grouped by patient, stratified by label); the rest is `train`.
    """
    source = Path(source)
    if not source.is_file():
        raise AlnvidError("source table not found", path=source, fix="check the path.")
    table = pd.read_csv(source, dtype=str, keep_default_na=False)
    absent = [theirs for theirs in columns.values() if theirs not in table.columns]
    if absent:
        raise AlnvidError(
            f"column(s) {', '.join(absent)} not in the table (found: {', '.join(table.columns)})",
            path=source,
            fix="map our columns to yours with --column ours=theirs, e.g. --column path=file.",
        )
    renamed = table.rename(columns={theirs: ours for ours, theirs in columns.items()})
    renamed = renamed.loc[:, ~renamed.columns.duplicated()]
    renamed["path"] = [str((source.parent / p).resolve()) if p else "" for p in renamed["path"]]
    labels = renamed["label"].str.strip().map({"0": 0, "1": 1, "0.0": 0, "1.0": 1})
    if labels.isna().any():
        bad = renamed.loc[labels.isna(), "label"].unique()[:5]
        raise AlnvidError(f"label values {', '.join(map(repr, bad))} are not 0 or 1", path=source,
                          fix="map the label column to 0 (no metastasis) / 1 (metastasis) before importing.")
    renamed["label"] = labels.astype(int)
    renamed["split"] = "train"
    if external_site is not None:
        if "site" not in renamed.columns:
            raise AlnvidError("--external-site needs a site column", fix="map one with --column site=...")
        external = renamed["site"] == str(external_site)
        if not external.any():
            raise AlnvidError(f"no rows with site '{external_site}'", path=source)
        renamed.loc[external, "split"] = "test_b"
    if test_fraction > 0:
        internal = renamed["split"] == "train"
        held = holdout(renamed[internal], test_fraction, seed)
        renamed.loc[renamed.index[internal][held], "split"] = "test_a"
    front = ["patient_id", "path", "label", "split"] + (["site"] if "site" in renamed.columns else [])
    ordered = renamed[front + [c for c in renamed.columns if c not in front]]
    atomic_write_csv(ordered, destination)
    return ordered
