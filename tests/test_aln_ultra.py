"""ALN-Ultra import: the real index file over empty placeholder files, the expert as a reader in cohort check,
stats, compare and report, and the importer's handling of missing, duplicated, benign and concatenated files."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from alnvid.cli.main import app
from alnvid.compare import join_readers, reader_accuracy, readers_table
from alnvid.data.manifest import load_manifest
from alnvid.stats import Predictions, summarize_predictions
RUNNER = CliRunner(env={"COLUMNS": "200"})


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


@pytest.fixture(scope="module")
def aln_ultra(aln_ultra_index, tmp_path_factory) -> tuple[Path, dict]:
    """The importer's manifest (test_a = 20%) over empty files spread over nested folders, and the index."""
    index = json.loads(aln_ultra_index.read_text())
    tmp = tmp_path_factory.mktemp("aln_ultra")
    root = tmp / "download"
    for key, (_, clips, still) in index.items():
        part = root / "ALN-Ultra" / f"part_{int(key) % 3}"
        for clip in clips:
            _touch(part / "videos" / key / clip)
        _touch(root / "ALN-Ultra" / "image_pad" / still)
    out = tmp / "aln_ultra.csv"
    result = RUNNER.invoke(app, ["cohort", "import-aln-ultra", str(aln_ultra_index), str(root), str(out),
                                 "--test-fraction", "0.2", "--json"])
    assert result.exit_code == 0, result.output
    return out, {"index": index, "root": root, "summary": json.loads(result.output)}


def test_real_index_gives_257_patients_and_1430_videos(aln_ultra):
    out, info = aln_ultra
    index, summary = info["index"], info["summary"]
    cancer = {key: entry for key, entry in index.items() if entry[0] != "2 2"}
    assert len(cancer) == 257 and sum(len(entry[1]) for entry in cancer.values()) == 1430
    assert summary | {"manifest": None} == {
        "manifest": None, "patients": 257, "videos": 1430, "patients_positive": 136, "patients_negative": 121,
        "splits": {"train": {"videos": summary["splits"]["train"]["videos"], "patients": 206},
                   "test_a": {"videos": 1430 - summary["splits"]["train"]["videos"], "patients": 51}},
        "benign_left_out": 27, "concatenated_videos": 0, "missing_files": 0, "patients_skipped": 0}

    table = load_manifest(out, check_files=False).table
    assert len(table) == 1430 and table["patient_id"].nunique() == 257
    assert list(table.columns[:6]) == ["patient_id", "path", "label", "split", "still_path", "reader_expert"]
    for row in table.itertuples():  # every row is its index entry: the clip, the still, biopsy and expert
        expert, biopsy = index[row.patient_id][0].split()
        assert Path(row.path).name in index[row.patient_id][1] and Path(row.path).is_file()
        assert Path(row.still_path).name == index[row.patient_id][2]
        assert Path(row.path).is_relative_to(info["root"])
        assert (row.label, int(row.reader_expert)) == (int(biopsy), int(expert))
    assert [Path(p).name for p in table["path"]] == [clip for entry in cancer.values() for clip in entry[1]]
    patients = table.drop_duplicates("patient_id")
    assert patients["label"].sum() == 136 and (patients["label"] == 0).sum() == 121
    assert table.groupby("patient_id")["split"].nunique().max() == 1  # split by patient, never by video
    test_a = patients[patients["split"] == "test_a"]
    assert test_a["label"].sum() == round(0.2 * 136) and (test_a["label"] == 0).sum() == round(0.2 * 121)


def test_expert_by_the_reports_statistics_and_cohort_check(aln_ultra):
    out, _ = aln_ultra
    table = load_manifest(out, check_files=False).table.drop_duplicates("patient_id")
    rng = np.random.default_rng(0)
    model = Predictions(str(out), table["patient_id"].to_numpy(str), table["label"].to_numpy(),
                        rng.random(len(table)), None, {})
    summary = summarize_predictions(join_readers(model, readers_table(out), "all"), n_boot=20)
    [expert] = summary.readers
    assert expert.name == "expert"
    sensitivity, specificity = expert.metrics.sensitivity, expert.metrics.specificity
    assert (sensitivity.numerator, sensitivity.denominator) == (109, 136)
    assert (specificity.numerator, specificity.denominator) == (101, 121)
    assert sensitivity.value == pytest.approx(0.801, abs=5e-4) and specificity.value == pytest.approx(0.835, abs=5e-4)

    check = RUNNER.invoke(app, ["cohort", "check", str(out), "--no-files", "--json"])
    assert check.exit_code == 0, check.output
    payload = json.loads(check.output)
    assert payload["splits"] == [
        {"split": "train", "videos": payload["splits"][0]["videos"], "patients": 206, "positive": 109, "negative": 97},
        {"split": "test_a", "videos": 1430 - payload["splits"][0]["videos"], "patients": 51, "positive": 27,
         "negative": 24}]
    everyone = {r["split"]: r for r in payload["readers"]}["all"]
    assert everyone["sensitivity"] == sensitivity.to_dict() and everyone["specificity"] == specificity.to_dict()
    assert {r["split"] for r in payload["readers"]} == {"train", "test_a", "all"}

    printed = RUNNER.invoke(app, ["cohort", "check", str(out), "--no-files"])
    assert printed.exit_code == 0, printed.output
    assert re.search(r"test_a\s*│\s*\d+\s*│\s*51\s*│\s*27\s*│\s*24\s*│", printed.output), printed.output
    assert "80.1% (109/136)" in printed.output and "83.5% (101/121)" in printed.output
    assert f"[{100 * sensitivity.ci_low:.1f}–{100 * sensitivity.ci_high:.1f}]" in printed.output

    # With the file check, empty placeholders are named as empty (nothing is decoded), and the counts still print.
    files = RUNNER.invoke(app, ["cohort", "check", str(out)])
    assert files.exit_code == 2
    assert "still_path is an empty file" in files.output and "109/136" in files.output


def test_expert_in_stats_compare_and_report(aln_ultra, tmp_path):
    out, _ = aln_ultra
    check = reader_accuracy(load_manifest(out, check_files=False).table)
    expert_test_a = {r.split: r.metrics for r in check}["test_a"]
    patients = pd.read_csv(out, dtype={"patient_id": str}).drop_duplicates("patient_id")
    test_a = patients[patients["split"] == "test_a"]
    rng = np.random.default_rng(1)
    run = tmp_path / "runs" / "tin-cv"
    run.mkdir(parents=True)
    pd.DataFrame({"patient_id": test_a["patient_id"], "label": test_a["label"],
                  "prob": np.clip(0.3 * test_a["label"] + 0.7 * rng.random(len(test_a)), 0, 1),
                  "split": "test_a"}).to_csv(run / "predictions_test_a.csv", index=False)
    (run / "summary.json").write_text(json.dumps({"model": "tin", "predictions": {"test_a": "predictions_test_a.csv"}}))

    stats = RUNNER.invoke(app, ["stats", str(run / "predictions_test_a.csv"), "--readers", str(out), "--n-boot", "20",
                                "--json"])
    assert stats.exit_code == 0, stats.output
    [reader] = json.loads(stats.output)["readers"]
    assert reader["name"] == "expert"
    for name in ("accuracy", "sensitivity", "specificity"):
        assert reader["metrics"][name] == getattr(expert_test_a, name).to_dict()
    assert reader["model_vs_reader_mcnemar"] is not None

    compared = RUNNER.invoke(app, ["compare", "model", "readers", "--runs", str(tmp_path / "runs"), "--readers",
                                   str(out), "--split", "test_a", "--n-boot", "20", "--json"])
    assert compared.exit_code == 0, compared.output
    [reader] = json.loads(compared.output)["readers"]
    assert reader["metrics"]["sensitivity"] == expert_test_a.sensitivity.to_dict()

    report = RUNNER.invoke(app, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--manifest",
                                 str(out), "--reader-split", "test_a", "--n-boot", "20"])
    assert report.exit_code == 0, report.output
    table3 = pd.read_csv(tmp_path / "report" / "tables" / "table3_readers.csv")
    expert = table3.set_index("rater").loc["reader expert"]
    assert expert["sensitivity_counts"] == expert_test_a.sensitivity.counts
    assert expert["specificity_counts"] == expert_test_a.specificity.counts
    assert (tmp_path / "report" / "figures" / "roc_readers_test_a.png").is_file()


SYNTHETIC = {
    "1": ["1 1", ["1_0.avi", "1_1.avi"], "1_3.jpg"],   # complete
    "2": ["0 0", ["2_0.avi", "2_1.avi"], "2_0.jpg"],   # 2_1.avi missing
    "3": ["1 0", ["3_0.avi"], "3_5.jpg"],              # only the concatenated video_concate/3.avi
    "4": ["0 1", ["4_0.avi"], "4_1.jpg"],              # still image missing
    "5": ["2 2", ["5_0.avi"], "5_0.jpg"],              # benign tumour
    "6": ["0 0", ["6_0.avi", "6_1.avi"], "6_0.jpg"],   # complete
}
ABSENT = {"2_1.avi", "3_0.avi", "4_1.jpg"}


@pytest.fixture()
def synthetic(tmp_path) -> tuple[Path, Path]:
    index = tmp_path / "index.json"
    index.write_text(json.dumps(SYNTHETIC))
    root = tmp_path / "root"
    for key, (_, clips, still) in SYNTHETIC.items():
        for name in [*clips, still]:
            if name not in ABSENT:
                _touch(root / ("images" if name.endswith(".jpg") else f"videos/{key}") / name)
    _touch(root / "video_concate" / "3.avi")
    return index, root


def _import(index: Path, root: Path, out: Path, *options: str):
    return RUNNER.invoke(app, ["cohort", "import-aln-ultra", str(index), str(root), str(out), *options])


def test_missing_files_are_all_listed_and_nothing_is_written(synthetic, tmp_path):
    index, root = synthetic
    out = tmp_path / "out.csv"
    out.write_text("an earlier manifest\n")
    result = _import(index, root, out)
    assert result.exit_code == 2
    assert "2 file(s) of the index not found below the folder (1 patient(s) without their still image" in result.output
    assert "patient 2: 2_1.avi" in result.output and "patient 4: 4_1.jpg" in result.output
    assert "3_0.avi" not in result.output  # its concatenated video stands in for it
    assert "--skip-missing" in result.output and "Traceback" not in result.output
    assert out.read_text() == "an earlier manifest\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "out.csv", "root"]  # no temporary left


def test_skip_missing_include_benign_and_concatenated_video(synthetic, tmp_path):
    index, root = synthetic
    out = tmp_path / "out.csv"
    result = _import(index, root, out, "--skip-missing", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["patients"], summary["videos"], summary["missing_files"], summary["patients_skipped"],
            summary["concatenated_videos"], summary["benign_left_out"]) == (4, 6, 2, 1, 1, 1)
    table = pd.read_csv(out, dtype={"patient_id": str})
    assert [(r.patient_id, Path(r.path).name, r.label, r.reader_expert, Path(r.still_path).name)
            for r in table.itertuples()] == [
        ("1", "1_0.avi", 1, 1, "1_3.jpg"), ("1", "1_1.avi", 1, 1, "1_3.jpg"), ("2", "2_0.avi", 0, 0, "2_0.jpg"),
        ("3", "3.avi", 0, 1, "3_5.jpg"), ("6", "6_0.avi", 0, 0, "6_0.jpg"), ("6", "6_1.avi", 0, 0, "6_0.jpg")]
    assert Path(table.loc[3, "path"]) == (root / "video_concate" / "3.avi").absolute()

    printed = _import(index, root, out, "--skip-missing", "--include-benign")
    assert printed.exit_code == 0, printed.output
    assert "Skipped 2 missing files (1 patients left out)" in printed.output
    assert "1 patients have their concatenated video instead of clips" in printed.output
    benign = pd.read_csv(out, dtype={"patient_id": str}).set_index("patient_id").loc["5"]
    assert (Path(benign["path"]).name, benign["label"], benign["reader_expert"]) == ("5_0.avi", 0, 0)

    default = _import(index, root, out, "--skip-missing")
    assert "Left out 1 patients with a benign tumour (--include-benign keeps them as label 0)" in default.output


def test_duplicated_files_and_bad_entries_are_named(synthetic, tmp_path):
    index, root = synthetic
    _touch(root / "copy" / "1_0.avi")
    out = tmp_path / "out.csv"
    result = _import(index, root, out, "--skip-missing")
    assert result.exit_code == 2
    assert "1 file name(s) found more than once" in result.output
    assert str(root / "copy" / "1_0.avi") in result.output and str(root / "videos" / "1" / "1_0.avi") in result.output
    assert not out.exists()

    index.write_text(json.dumps({**SYNTHETIC, "7": ["1 3", ["7_0.avi"], "7_0.jpg"], "8": ["1 1", [], "8_0.jpg"]}))
    bad = _import(index, root, out)
    assert bad.exit_code == 2
    assert "2 entries not of the form" in bad.output and "patient '7'" in bad.output and "patient '8'" in bad.output

    empty = tmp_path / "empty"
    empty.mkdir()
    index.write_text(json.dumps(SYNTHETIC))
    nothing = _import(index, empty, out)
    assert nothing.exit_code == 2 and "none of the" in nothing.output and "Zenodo" in nothing.output
    assert not out.exists()

    not_json = tmp_path / "notes.txt"
    not_json.write_text("E B")
    unreadable = _import(not_json, root, out)
    assert unreadable.exit_code == 2 and "not a JSON file" in unreadable.output and "dataloader" in unreadable.output
