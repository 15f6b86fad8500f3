"""Manifest validation: every problem type is found, all at once, before any training."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from alnvid.cli.main import app
from alnvid.data.manifest import check_manifest, load_manifest
from alnvid.errors import ManifestError


def _copy_cohort(tiny_cohort: Path, tmp_path: Path) -> pd.DataFrame:
    shutil.copytree(tiny_cohort.parent, tmp_path / "cohort")
    return pd.read_csv(tmp_path / "cohort" / "manifest.csv", dtype=str, keep_default_na=False)


def _write(table: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "cohort" / "manifest.csv"
    table.to_csv(path, index=False)
    return path


def test_demo_manifest_is_valid(tiny_cohort):
    manifest = load_manifest(tiny_cohort)
    assert manifest.splits == ["train", "test_a", "test_b"]
    assert manifest.test_splits == ["test_a", "test_b"]
    assert manifest.reader_names == ["junior", "senior", "expert"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in manifest.table["path"])
    assert len(manifest.sha256) == 64


def test_every_problem_is_listed_at_once(tiny_cohort, tmp_path):
    table = _copy_cohort(tiny_cohort, tmp_path)
    (tmp_path / "cohort" / "videos" / "P003.dcm").unlink()                     # missing file
    (tmp_path / "cohort" / "videos" / "P004.dcm").write_bytes(b"not a dicom")   # unreadable DICOM
    table.loc[table.patient_id == "P005", "label"] = "yes"                       # unknown label
    table.loc[table.patient_id == "P006", "split"] = "testing"                   # unknown split
    leak = table[table.patient_id == "P007"].assign(split="test_a", path="videos/P010.dcm")
    duplicate = table[table.patient_id == "P011"]
    table = pd.concat([table, leak, duplicate], ignore_index=True)              # patient in two splits, duplicate
    table.loc[(table.split == "test_b"), "label"] = "0"                          # a split with one class
    path = _write(table, tmp_path)

    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    problems = raised.value.problems
    text = "\n".join(problems)
    assert "P003.dcm" in text and "not found" in text
    assert "P004.dcm" in text and "not a readable DICOM" in text
    assert "label 'yes' is not 0 or 1" in text
    assert "split 'testing' is unknown" in text
    assert "patient P007 is in several splits (test_a, train)" in text
    assert "the same video is listed twice" in text and "P011.dcm" in text
    assert "split 'test_b' has only class 0" in text
    assert str(path) in raised.value.message and "What to do" in raised.value.message


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("patient,path,label\nP1,a.dcm,1\n")
    check = check_manifest(path)
    assert not check.ok
    assert "missing required column(s) patient_id" in check.problems[0]
    assert "found: patient, path, label" in check.problems[0]


def test_bad_crop_box(tiny_cohort, tmp_path):
    table = _copy_cohort(tiny_cohort, tmp_path)
    table["crop_box"] = ""
    table.loc[0, "crop_box"] = "10,10,5,20"
    check = check_manifest(_write(table, tmp_path))
    assert check.problems == ["line 2: crop_box '10,10,5,20' must be 'x0,y0,x1,y1' with x0 < x1 and y0 < y1"]


def test_cohort_check_cli(tiny_cohort, tmp_path):
    runner = CliRunner(env={"COLUMNS": "200"})
    ok = runner.invoke(app, ["cohort", "check", str(tiny_cohort), "--json"])
    assert ok.exit_code == 0, ok.output
    payload = json.loads(ok.output)
    assert payload["ok"] is True
    assert sum(row["videos"] for row in payload["counts"]) == 24
    table = _copy_cohort(tiny_cohort, tmp_path)
    table.loc[table.patient_id == "P003", "label"] = "2"
    bad = runner.invoke(app, ["cohort", "check", str(_write(table, tmp_path))])
    assert bad.exit_code == 2
    assert "label '2' is not 0 or 1" in bad.output and "1 problem(s)" in bad.output


def test_import_pocus(pocus_dir, tmp_path):
    out = tmp_path / "pocus.csv"
    result = CliRunner().invoke(app, ["cohort", "import-pocus", str(pocus_dir / "manifest.csv"), str(out),
                                      "--test-fraction", "0.2"])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    table = manifest.table
    assert len(table) == 100 and table["label"].sum() == 56
    assert set(table["split"]) == {"train", "test_a"}
    # split by patient, never by video
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    assert set(table["site"]) == set(pd.read_csv(pocus_dir / "manifest.csv", dtype=str)["source_id"])


def test_import_with_column_mapping(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    source = tmp_path / "theirs.csv"
    source.write_text("case,file,n_plus\nA,v.mp4,1\n")
    out = tmp_path / "ours.csv"
    result = CliRunner().invoke(app, ["cohort", "import", str(source), str(out), "--column", "patient_id=case",
                                      "--column", "path=file", "--column", "label=n_plus"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out)
    assert list(written.columns[:4]) == ["patient_id", "path", "label", "split"]
    assert written.loc[0, "path"] == str((tmp_path / "v.mp4").resolve())
    wrong = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["cohort", "import", str(source), str(out), "--column", "label=nodes"])
    assert wrong.exit_code == 2
    assert "column(s) patient_id, path, nodes not in the table (found: case, file, n_plus)" in wrong.output


def test_reader_calls_are_checked(tiny_cohort, tmp_path):
    table = _copy_cohort(tiny_cohort, tmp_path)
    first, second = table.index[table["split"] == "test_b"][:2]
    table.loc[first, "reader_junior"] = "maybe"
    patient, call = table.loc[second, "patient_id"], table.loc[second, "reader_senior"]
    second_video = table.loc[[second]].assign(path="videos/another.dcm", reader_senior="1" if call == "0" else "0")
    check = check_manifest(_write(pd.concat([table, second_video]), tmp_path), check_files=False)
    assert check.problems == [
        f"line {first + 2}: reader_junior 'maybe' is not 0 or 1 (1 = called metastasis; empty = not read)",
        f"lines {second + 2}, {len(table) + 2}: patient {patient} has different reader_senior calls on its videos; "
        "give a reader's one call on every video"]
