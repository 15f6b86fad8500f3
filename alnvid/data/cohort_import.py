"""Turn someone else's cohort into an alnvid manifest: a table with other column names (column mapping, paths,
held-out test splits), or the public ALN-Ultra cohort's index file."""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from alnvid.data.folds import holdout
from alnvid.errors import AlnvidError
from alnvid.io.table import read_csv_table
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
    table = read_csv_table(source, "source table", dtype=str, keep_default_na=False)
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
    hold_out_test_a(renamed, test_fraction, seed)
    front = ["patient_id", "path", "label", "split"] + (["site"] if "site" in renamed.columns else [])
    ordered = renamed[front + [c for c in renamed.columns if c not in front]]
    atomic_write_csv(ordered, destination)
    return ordered


def hold_out_test_a(table: pd.DataFrame, test_fraction: float, seed: int) -> None:
    """Move `test_fraction` of the `train` patients to `test_a` in place (grouped by patient, stratified by label)."""
    if test_fraction:
        internal = table["split"] == "train"
        held = holdout(table[internal], test_fraction, seed)
        table.loc[table.index[internal][held], "split"] = "test_a"


ALN_ULTRA_BENIGN = 2
"""ALN-Ultra's code for a benign tumour (no breast cancer), in the biopsy result and the expert's call alike."""
ALN_ULTRA_INDEX_FIX = "give data_image_selected_video.json from one of the ALN-Ultra code's dataloader folders."
ALN_ULTRA_ENTRY = re.compile(r"^\s*([012])\s+([012])\s*$")


@dataclass(frozen=True)
class AlnUltraPatient:
    """One index entry: the expert's call and the biopsy result (0, 1 or 2 = benign), clip names, still name."""

    key: str
    expert: int
    biopsy: int
    clips: list[str]
    still: str


@dataclass
class AlnUltraImport:
    """The manifest written by `import_aln_ultra`, and what it left out and why."""

    table: pd.DataFrame
    benign_left_out: int
    """Patients with a benign tumour not written (`include_benign` keeps them)."""
    concatenated: int
    """Patients whose one concatenated video (`video_concate/<key>.avi`) stands in for their clips."""
    missing: list[str]
    """Files named by the index and not found under the root, left out with `skip_missing`."""
    patients_skipped: int
    """Patients left out for a missing file: their still image, or every video."""

    def summary(self) -> dict:
        patients = self.table.drop_duplicates("patient_id")
        splits = self.table.groupby("split", sort=False)["patient_id"].agg(["size", "nunique"])
        return {"patients": len(patients), "videos": len(self.table),
                "patients_positive": int(patients["label"].sum()),
                "patients_negative": int((patients["label"] == 0).sum()),
                "splits": {split: {"videos": int(row["size"]), "patients": int(row["nunique"])}
                           for split, row in splits.iterrows()},
                "benign_left_out": self.benign_left_out, "concatenated_videos": self.concatenated,
                "missing_files": len(self.missing), "patients_skipped": self.patients_skipped}


def import_aln_ultra(
    index: str | Path,
    root: str | Path,
    destination: str | Path,
    *,
    include_benign: bool = False,
    skip_missing: bool = False,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> AlnUltraImport:
    """Write an alnvid manifest of ALN-Ultra from its index file and the folder holding its download.

    One row per video: `patient_id` = the index key, `label` = the biopsy result, `reader_expert` = the expert's
    call, `still_path` = the selected image. Files are found by name anywhere below `root` (the archive's layout
    is not documented); a patient with none of its clips but its concatenated `<key>.avi` gets that one video.
    Benign tumours (biopsy 2) are left out unless `include_benign`, which keeps them as label 0 with the
    expert's call (also 2, 'benign') as 0. Missing files stop the import, all listed, unless `skip_missing`.
    Nothing is decoded; nothing is written unless every check passes.
    """
    index, root = Path(index), Path(root)
    patients = read_aln_ultra_index(index)
    if not root.is_dir():
        raise AlnvidError("folder not found", path=root, fix="give the folder you unpacked the Zenodo download into.")
    kept = [p for p in patients if include_benign or p.biopsy != ALN_ULTRA_BENIGN]
    wanted = {name for p in kept for name in (*p.clips, p.still, f"{p.key}.avi")}
    found = _files_by_name(root, wanted)
    if not found:
        raise AlnvidError(f"none of the {len(wanted)} files of the index is below this folder", path=root,
                          fix="give the folder you unpacked the Zenodo download (record 15003119) into.")

    rows, missing, used = [], defaultdict(list), defaultdict(list)
    concatenated = skipped = 0
    for p in kept:
        videos = [name for name in p.clips if name in found]
        if not videos and f"{p.key}.avi" in found:
            videos = [f"{p.key}.avi"]
            concatenated += 1
        else:
            missing[p.key] += [name for name in p.clips if name not in found]
        if p.still not in found:
            missing[p.key].append(p.still)
        if not videos or p.still not in found:
            skipped += 1
            continue
        for name in (*videos, p.still):
            used[name] = found[name]
        label = 0 if p.biopsy == ALN_ULTRA_BENIGN else p.biopsy
        call = 0 if p.expert == ALN_ULTRA_BENIGN else p.expert
        rows += [{"patient_id": p.key, "path": str(found[video][0]), "label": label, "split": "train",
                  "still_path": str(found[p.still][0]), "reader_expert": call} for video in videos]

    ambiguous = {name: paths for name, paths in used.items() if len(paths) > 1}
    if ambiguous:
        listed = "\n".join(f"  - {name}: {' and '.join(map(str, paths))}" for name, paths in sorted(ambiguous.items()))
        raise AlnvidError(f"{len(ambiguous)} file name(s) found more than once below the folder:\n{listed}",
                          path=root, fix="keep one copy of each file below the folder (move the other copies out).")
    missing_files = [name for names in missing.values() for name in names]
    if missing_files and not skip_missing:
        listed = "\n".join(f"  - patient {key}: {', '.join(names)}" for key, names in missing.items() if names)
        raise AlnvidError(f"{len(missing_files)} file(s) of the index not found below the folder "
                          f"({skipped} patient(s) without their still image or any video):\n{listed}",
                          path=root, fix="unpack the missing files below the folder, or pass --skip-missing to "
                                         "leave them out (a patient without its still image or any video is left out).")
    if not rows:
        raise AlnvidError("no patient has both a video and its still image below the folder", path=root,
                          fix="give the folder you unpacked the Zenodo download into.")
    table = pd.DataFrame(rows)
    hold_out_test_a(table, test_fraction, seed)
    atomic_write_csv(table, destination)
    return AlnUltraImport(table, benign_left_out=len(patients) - len(kept), concatenated=concatenated,
                          missing=missing_files, patients_skipped=skipped)


def read_aln_ultra_index(index: Path) -> list[AlnUltraPatient]:
    """The patients of ALN-Ultra's `data_image_selected_video.json`; every malformed entry is named in one error."""
    if not index.is_file():
        raise AlnvidError("index file not found", path=index, fix=ALN_ULTRA_INDEX_FIX)
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AlnvidError(f"not a JSON file ({error})", path=index, fix=ALN_ULTRA_INDEX_FIX) from None
    if not isinstance(raw, dict) or not raw:
        raise AlnvidError("expected a JSON object with one entry per patient", path=index, fix=ALN_ULTRA_INDEX_FIX)
    patients = {str(key): _aln_ultra_patient(str(key), value) for key, value in raw.items()}
    problems = [f"patient {key!r}: {str(raw[key])[:80]}" for key, patient in patients.items() if patient is None]
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise AlnvidError(f"{len(problems)} entries not of the form [\"E B\", [\"<key>_<n>.avi\", ...], "
                          f"\"<key>_<n>.jpg\"] (E, B in 0, 1, 2):\n{listed}", path=index,
                          fix="use the index file unchanged, as shipped with the ALN-Ultra code.")
    return list(patients.values())


def _aln_ultra_patient(key: str, value: object) -> AlnUltraPatient | None:
    """An index entry ["E B", [clip names], still name] as a patient; None when it is not of that form."""
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)):
        return None
    codes, clips, still = ALN_ULTRA_ENTRY.match(value[0]), value[1], value[2]
    names = [*clips, still] if isinstance(clips, list) and clips else []
    if not codes or not names or not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        return None
    return AlnUltraPatient(key, int(codes[1]), int(codes[2]), list(clips), still)


def _files_by_name(root: Path, wanted: set[str]) -> dict[str, list[Path]]:
    """Every path below `root` (walked once) whose file name is in `wanted`, absolute, by name."""
    found = defaultdict(list)
    for folder, _, names in os.walk(root):
        for name in names:
            if name in wanted:
                found[name].append(Path(os.path.abspath(os.path.join(folder, name))))
    return {name: sorted(paths) for name, paths in found.items()}
