"""The cohort manifest: one CSV row per video, validated up front so that training never starts on bad data.

Columns: `patient_id`, `path` (video, relative to the manifest's folder or absolute), `label` (0/1; 1 = ALN
metastasis) are required. Optional: `split` (train / val / test_a / test_b / any `test_*`; empty = train, used for
cross-validation), `site`, `still_path` (a separate static image), `crop_box` ("x0,y0,x1,y1" in pixels, overrides
the automatic imaging-region detection), `reader_<name>` (0/1 sonographer calls) and `reader_<name>_score`
(ordinal), and any clinical columns (age, tumour size, BI-RADS, ...).
"""
from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from alnvid.data.crop import Box
from alnvid.data.folds import folds_fix, folds_problem
from alnvid.errors import AlnvidError, InputFileError, ManifestError
from alnvid.io import check_modality
from alnvid.io.dicom import read_dataset
from alnvid.io.table import read_csv_table

REQUIRED_COLUMNS = ("patient_id", "path", "label")
TRAIN_SPLITS = ("train", "val")
DICOM_SUFFIXES = (".dcm", ".dicom", "")


@dataclass(frozen=True)
class Manifest:
    """A validated cohort: `table` has absolute `path`/`still_path` and a normalised `split` column."""

    path: Path
    table: pd.DataFrame
    sha256: str

    @property
    def splits(self) -> list[str]:
        return sorted(self.table["split"].unique(), key=split_order)

    @property
    def test_splits(self) -> list[str]:
        return [s for s in self.splits if s not in TRAIN_SPLITS]

    @property
    def reader_names(self) -> list[str]:
        return reader_names(self.table.columns)

    def rows(self, split: str | list[str]) -> pd.DataFrame:
        wanted = [split] if isinstance(split, str) else split
        return self.table[self.table["split"].isin(wanted)].reset_index(drop=True)


@dataclass
class ManifestCheck:
    """What `alnvid cohort check` shows: counts per split/site/label and every problem found."""

    path: Path
    table: pd.DataFrame | None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Worth a look but not blocking, e.g. a patient whose videos carry different labels."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> pd.DataFrame:
        """Videos and patients per split, site and label."""
        if self.table is None or self.table.empty:
            return pd.DataFrame(columns=["split", "site", "label", "videos", "patients"])
        grouped = self.table.groupby(["split", "site", "label"], dropna=False)
        counts = grouped.agg(videos=("path", "size"), patients=("patient_id", "nunique")).reset_index()
        counts["order"] = counts["split"].map(split_order)
        return counts.sort_values(["order", "site", "label"]).drop(columns="order").reset_index(drop=True)


def reader_names(columns) -> list[str]:
    """Sonographer names from `reader_<name>` decision columns (not the `_score` ones)."""
    return [c[len("reader_"):] for c in columns if c.startswith("reader_") and not c.endswith("_score")]


def check_manifest(path: str | Path, *, check_files: bool = True, folds: int | None = None,
                   allow_modalities: Collection[str] = ()) -> ManifestCheck:
    """Read and validate a manifest, collecting every problem instead of stopping at the first.

    With `check_files`, every file must exist and every DICOM header be readable and ultrasound (or of a
    modality in `allow_modalities`); with `folds`, the train/val rows must allow that many CV folds.
    """
    path = Path(path)
    try:
        raw = read_csv_table(path, "manifest", dtype=str, keep_default_na=False)
    except InputFileError as exc:
        return ManifestCheck(path, None, [exc.problem + (f"; {exc.fix}" if exc.fix else "")])
    raw.columns = [c.strip() for c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        return ManifestCheck(
            path,
            None,
            [f"missing required column(s) {', '.join(missing)}; found: {', '.join(raw.columns)}. "
             "Rename the columns or convert with `alnvid cohort import --column ours=theirs`."],
        )
    if raw.empty:
        return ManifestCheck(path, None, ["the manifest has a header but no rows: add one row per video"])
    table, problems = _normalise(raw, path.parent)
    if check_files:
        problems += _file_problems(table, allow_modalities)
    problems += _cohort_problems(table)
    if folds is not None:
        development = table[table["split"].isin(TRAIN_SPLITS)]
        problem = folds_problem(development, folds)
        if problem:
            problems.append(f"{problem}; {folds_fix(development)}")
    return ManifestCheck(path, table, problems, _cohort_warnings(table))


def load_manifest(path: str | Path, *, check_files: bool = True, folds: int | None = None,
                  allow_modalities: Collection[str] = ()) -> Manifest:
    """Validate and load a manifest (see `check_manifest`); raise `ManifestError` listing every problem at once."""
    check = check_manifest(path, check_files=check_files, folds=folds, allow_modalities=allow_modalities)
    if not check.ok:
        raise ManifestError(check.problems, path=path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return Manifest(Path(path).resolve(), check.table, digest)


def load_file_list(path: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """A CSV of new cases to predict: `patient_id` and `path` (labels optional; an optional `crop_box`).

    Paths are resolved like a manifest's; every missing file (unless `check_files` is off, for a batch that
    skips bad files) or bad crop box is listed in one error.
    """
    path = Path(path)
    table = read_csv_table(path, "file list", dtype=str, keep_default_na=False)
    missing = [c for c in ("patient_id", "path") if c not in table.columns]
    if missing:
        raise ManifestError([f"missing column(s) {', '.join(missing)}; found: {', '.join(table.columns)}"], path=path)
    table["path"] = [_resolve(p.strip(), path.parent) for p in table["path"]]
    if "still_path" in table.columns:
        table["still_path"] = [_resolve(p.strip(), path.parent) for p in table["still_path"]]
    table["line"] = table.index + 2
    problems = [f"line {n}: {column} not found: {value}" for n, column, value in _file_cells(table)
                if check_files and not Path(value).is_file()]
    if "crop_box" in table.columns:
        problems += [f"line {n}: crop_box '{b}' must be 'x0,y0,x1,y1' with x0 < x1 and y0 < y1"
                     for n, b in zip(table.index + 2, table["crop_box"]) if b and not _valid_box(b)]
    if problems:
        raise ManifestError(problems, path=path)
    return table


def _normalise(raw: pd.DataFrame, base: Path) -> tuple[pd.DataFrame, list[str]]:
    problems: list[str] = []
    table = raw.copy()
    for column in table.columns:
        table[column] = table[column].str.strip()
    line = table.index + 2  # CSV line numbers (header is line 1)

    bad_id = table["patient_id"] == ""
    for n in line[bad_id]:
        problems.append(f"line {n}: empty patient_id")

    labels = table["label"].map({"0": 0, "1": 1, "0.0": 0, "1.0": 1})
    for n, value in zip(line[labels.isna()], table["label"][labels.isna()]):
        problems.append(f"line {n}: label '{value}' is not 0 or 1 (1 = metastasis, 0 = no metastasis)")
    table["label"] = labels.fillna(-1).astype(int)

    if "split" not in table.columns:
        table["split"] = "train"
    table["split"] = table["split"].str.lower().replace("", "train")
    bad_split = ~table["split"].map(lambda s: s in TRAIN_SPLITS or s == "test" or s.startswith("test_"))
    for n, value in zip(line[bad_split], table["split"][bad_split]):
        problems.append(f"line {n}: split '{value}' is unknown; use train, val, test_a, test_b (or any test_*)")

    if "site" not in table.columns:
        table["site"] = ""
    table["path"] = [_resolve(p, base) for p in table["path"]]
    if "still_path" in table.columns:
        table["still_path"] = [_resolve(p, base) if p else "" for p in table["still_path"]]
    if "crop_box" in table.columns:
        for n, value in zip(line, table["crop_box"]):
            if value and not _valid_box(value):
                problems.append(f"line {n}: crop_box '{value}' must be 'x0,y0,x1,y1' with x0 < x1 and y0 < y1")
    for name in reader_names(table.columns):
        column = table[f"reader_{name}"]
        bad = ~column.isin(["", "0", "1", "0.0", "1.0"])
        for n, value in zip(line[bad], column[bad]):
            problems.append(f"line {n}: reader_{name} '{value}' is not 0 or 1 (1 = called metastasis; empty = "
                            "not read)")
    table["line"] = line
    return table.reset_index(drop=True), problems


def _file_problems(table: pd.DataFrame, allow_modalities: Collection[str]) -> list[str]:
    problems = []
    for n, column, value in _file_cells(table):
        file = Path(value)
        if not file.is_file():
            problems.append(f"line {n}: {column} not found: {file}")
        elif file.stat().st_size == 0:
            problems.append(f"line {n}: {column} is an empty file: {file}")
        elif file.suffix.lower() in DICOM_SUFFIXES:
            problem = _dicom_header_problem(file, allow_modalities)
            if problem:
                problems.append(f"line {n}: {column} {file}: {problem}")
    return problems


def _file_cells(table: pd.DataFrame):
    for column in ("path", "still_path"):
        if column in table.columns:
            for n, value in zip(table["line"], table[column]):
                if value:
                    yield n, column, value


def _dicom_header_problem(file: Path, allow_modalities: Collection[str]) -> str | None:
    """What is wrong with a DICOM's header (unreadable, truncated, no image, not ultrasound), or None."""
    try:
        header = read_dataset(file, with_pixels=False)
    except InputFileError as exc:
        return exc.problem
    try:
        check_modality(str(header.get("Modality", "")).strip() or None, file, allow_modalities)
    except InputFileError as exc:
        return f"{exc.problem}; {exc.fix}"
    return None


def _cohort_problems(table: pd.DataFrame) -> list[str]:
    problems = []
    duplicated = table[table.duplicated(["path"], keep=False)]
    for path, rows in duplicated.groupby("path"):
        problems.append(f"lines {_lines(rows)}: the same video is listed twice: {path}")
    for patient, rows in table.groupby("patient_id"):
        if patient == "":
            continue
        splits = sorted(rows["split"].unique())
        if len(splits) > 1:
            problems.append(
                f"lines {_lines(rows)}: patient {patient} is in several splits ({', '.join(splits)}); "
                "a patient must be in one split only, or the test set leaks into training"
            )
    for name in reader_names(table.columns):
        calls = table.groupby("patient_id")[f"reader_{name}"].nunique()
        for patient in calls.index[(calls > 1) & (calls.index != "")]:
            problems.append(f"lines {_lines(table[table['patient_id'] == patient])}: patient {patient} has different "
                            f"reader_{name} calls on its videos; give a reader's one call on every video")
    for split, rows in table.groupby("split"):
        labels = set(rows["label"]) - {-1}
        if len(labels) == 1:
            problems.append(
                f"split '{split}' has only class {labels.pop()} ({len(rows)} videos): AUC, sensitivity and "
                "specificity need both classes; move patients between splits or merge the split"
            )
    return problems


def _cohort_warnings(table: pd.DataFrame) -> list[str]:
    mixed = table.groupby("patient_id").filter(lambda rows: rows["label"].nunique() > 1)
    return [f"lines {_lines(rows)}: patient {patient} has videos with different labels; they are scored per video"
            for patient, rows in mixed.groupby("patient_id")]


def _lines(rows: pd.DataFrame) -> str:
    return ", ".join(str(n) for n in rows["line"])


def _resolve(value: str, base: Path) -> str:
    if not value:
        return ""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _valid_box(value: str) -> bool:
    try:
        Box.from_string(value)
    except AlnvidError:
        return False
    return True


def split_order(split: str) -> tuple[int, str]:
    """Sort key of split names: train, val, then the test splits by name."""
    return ({"train": 0, "val": 1}.get(split, 2), split)
