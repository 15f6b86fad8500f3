"""Batches that survive bad files (`predict`/`explain` with and without --skip-errors, nothing half-written) and
checkpoints that carry their settings and fail with a message, never a traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from alnvid.cli.main import app
from alnvid.io import content_hash
from alnvid.models.module import RUN_CONFIG_KEY
from alnvid.models.trained import load_trained, predict_file

RUNNER = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture()
def batch(tiny_cohort, tmp_path):
    """A CSV of four cases: good, random bytes named .dcm, missing file, good."""
    manifest = pd.read_csv(tiny_cohort)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(np.random.default_rng(0).bytes(4096))
    paths = [tiny_cohort.parent / manifest["path"][0], broken, tmp_path / "gone.dcm", tiny_cohort.parent / manifest["path"][1]]
    cases = tmp_path / "cases.csv"
    pd.DataFrame({"patient_id": ["P1", "P2", "P3", "P4"], "path": [str(p) for p in paths]}).to_csv(cases, index=False)
    return cases, paths


def _no_traceback(result) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


# --- predict ---------------------------------------------------------------------------------------------------


def test_predict_stops_at_the_first_bad_file_naming_row_and_patient(tiny_checkpoint, batch, tmp_path):
    cases, _ = batch
    out = tmp_path / "out" / "predictions.csv"
    # the file list is checked first: every missing file at once
    missing = RUNNER.invoke(app, ["predict", str(cases), "-c", str(tiny_checkpoint), "--out", str(out)])
    _no_traceback(missing)
    assert "line 4: path not found" in missing.output
    pd.read_csv(cases).drop(index=2).to_csv(cases, index=False)
    result = RUNNER.invoke(app, ["predict", str(cases), "-c", str(tiny_checkpoint), "--out", str(out)])
    _no_traceback(result)
    assert "line 3 (patient P2)" in result.output and "--skip-errors" in result.output
    assert not out.parent.exists()  # nothing written, not even the folder


def test_predict_skip_errors_writes_the_rest_and_lists_the_bad_files(tiny_checkpoint, batch, tmp_path):
    cases, paths = batch
    out = tmp_path / "predictions.csv"
    result = RUNNER.invoke(app, ["predict", str(cases), "-c", str(tiny_checkpoint), "--out", str(out), "--skip-errors",
                                 "--json"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out, dtype={"patient_id": str}, keep_default_na=False)
    assert list(written.columns) == ["row", "patient_id", "label", "prob"]
    assert written["row"].tolist() == [2, 5] and written["patient_id"].tolist() == ["P1", "P4"]
    model = load_trained(tiny_checkpoint)
    expected = [predict_file(model, paths[i]).prob for i in (0, 3)]
    np.testing.assert_allclose(written["prob"], expected, atol=1e-6)
    errors = pd.read_csv(tmp_path / "predictions_errors.csv", keep_default_na=False)
    assert list(errors.columns) == ["row", "patient_id", "file", "reason"]
    assert errors["row"].tolist() == [3, 4] and errors["patient_id"].tolist() == ["P2", "P3"]
    assert errors["file"].tolist() == [f"file_{content_hash(paths[1])[:8]}", ""]  # neutral ids, never names
    assert "not found" in errors["reason"][1]
    text = (tmp_path / "predictions_errors.csv").read_text() + out.read_text()
    assert "broken" not in text and "gone" not in text
    printed = json.loads(result.stdout)
    assert [r["patient_id"] for r in printed["predictions"]] == ["P1", "P4"]
    assert [r["row"] for r in printed["errors"]] == [3, 4]


def test_predict_bare_files_skip_errors_without_out(tiny_checkpoint, batch):
    _, paths = batch
    result = RUNNER.invoke(app, ["predict", str(paths[1]), str(paths[0]), "-c", str(tiny_checkpoint), "--skip-errors"])
    assert result.exit_code == 0, result.output
    assert "1 of 2 input(s) skipped" in result.output and "input 1" in result.output
    assert f"file_{content_hash(paths[0])[:8]}" in result.output


def test_predict_out_must_be_a_file(tiny_checkpoint, batch, tmp_path):
    _, paths = batch
    result = RUNNER.invoke(app, ["predict", str(paths[0]), "-c", str(tiny_checkpoint), "--out", str(tmp_path)])
    _no_traceback(result)
    assert "--out is a folder" in result.output


# --- explain ---------------------------------------------------------------------------------------------------


def test_explain_stops_at_a_bad_file_and_leaves_nothing(tiny_checkpoint, batch, tmp_path):
    _, paths = batch
    out = tmp_path / "heat"
    result = RUNNER.invoke(app, ["explain", str(paths[0]), str(paths[1]), "-c", str(tiny_checkpoint), "--out", str(out),
                                 "--no-gif", "--no-mp4"])
    _no_traceback(result)
    assert "input 2 (patient file_" in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".heat")]  # the staging folder is gone


def test_explain_skip_errors_writes_index_and_errors(tiny_checkpoint, batch, tiny_cohort, tmp_path):
    _, paths = batch
    manifest = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False)
    manifest["path"] = [str(tiny_cohort.parent / p) for p in manifest["path"]]
    test_a = manifest.index[manifest["split"] == "test_a"]
    manifest.loc[test_a[1:3], "path"] = [str(p) for p in paths[1:3]]  # random bytes, missing
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    paths = [Path(p) for p in manifest.loc[test_a, "path"]]
    lines, patients = (test_a + 2).tolist(), manifest.loc[test_a, "patient_id"].tolist()
    out = tmp_path / "heat"
    result = RUNNER.invoke(app, ["explain", "--manifest", str(tmp_path / "manifest.csv"), "--split", "test_a",
                                 "-c", str(tiny_checkpoint), "--out", str(out), "--no-gif", "--no-mp4", "--skip-errors",
                                 "--json"])
    assert result.exit_code == 0, result.output
    index = pd.read_csv(out / "index.csv", dtype={"patient_id": str})
    assert index["row"].tolist() == [lines[0], lines[3]] and index["patient_id"].tolist() == [patients[0], patients[3]]
    for name, files, path in zip(index["name"], index["files"], (paths[0], paths[3])):
        assert name == f"explain_{content_hash(path)[:8]}"
        assert len(files.split()) == 5 and all((out / f).is_file() and f.startswith(name) for f in files.split())
    errors = pd.read_csv(out / "errors.csv", dtype={"patient_id": str}, keep_default_na=False)
    assert errors["row"].tolist() == lines[1:3] and errors["patient_id"].tolist() == patients[1:3]
    printed = json.loads(result.stdout)
    assert [r["row"] for r in printed["explanations"]] == [lines[0], lines[3]] and len(printed["errors"]) == 2
    model = load_trained(tiny_checkpoint)
    assert printed["explanations"][0]["probability"] == pytest.approx(predict_file(model, paths[0]).prob, abs=1e-6)


# --- checkpoints -----------------------------------------------------------------------------------------------


def test_checkpoint_works_on_its_own_and_old_ones_use_the_run_folder(tiny_checkpoint, tmp_path):
    model = load_trained(tiny_checkpoint)
    assert model.config.data.input_size == 32 and model.config.model.name == "r2plus1d_18"
    old = tmp_path / "run" / "checkpoints" / "best.ckpt"  # as written before settings were embedded
    old.parent.mkdir(parents=True)
    content = torch.load(tiny_checkpoint, weights_only=False)
    del content[RUN_CONFIG_KEY]
    torch.save(content, old)
    with pytest.raises(Exception, match="holds no run settings"):
        load_trained(old)
    model.config.save(tmp_path / "run" / "config.yaml")
    assert load_trained(old).config.data.resize == 40


@pytest.mark.parametrize("kind", ["random", "truncated", "empty", "folder", "plain_dict"])
def test_bad_checkpoints_give_a_message_not_a_traceback(kind, tiny_checkpoint, batch, tmp_path):
    _, paths = batch
    bad = tmp_path / "bad.ckpt"
    if kind == "random":
        bad.write_bytes(np.random.default_rng(1).bytes(100_000))
    elif kind == "truncated":
        bad.write_bytes(tiny_checkpoint.read_bytes()[:100_000])
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "folder":
        bad.mkdir()
    else:
        torch.save({"weights": torch.zeros(3)}, bad)
    for command in ("predict", "explain"):
        result = RUNNER.invoke(app, [command, str(paths[0]), "-c", str(bad), "--out", str(tmp_path / command)])
        _no_traceback(result)
        assert ("checkpoint not found (this is a folder)" if kind == "folder" else "not a readable alnvid "
                "checkpoint") in result.output
        assert not (tmp_path / command).exists()


def test_a_checkpoint_whose_cache_folder_is_gone_uses_the_local_cache(tiny_checkpoint, batch, tmp_path,
                                                                      monkeypatch):
    """A checkpoint copied from another machine names that machine's cache folder: it is neither created nor
    used here; the local cache ($ALNVID_CACHE) is."""
    _, paths = batch
    state = torch.load(tiny_checkpoint, weights_only=False)
    state[RUN_CONFIG_KEY]["data"]["cache_dir"] = str(tmp_path / "other-machine" / "cache")
    copied = tmp_path / "model.ckpt"
    torch.save(state, copied)
    monkeypatch.setenv("ALNVID_CACHE", str(tmp_path / "local-cache"))
    here = RUNNER.invoke(app, ["predict", str(paths[0]), "-c", str(copied), "--json"])
    there = RUNNER.invoke(app, ["predict", str(paths[0]), "-c", str(tiny_checkpoint), "--json"])
    assert here.exit_code == there.exit_code == 0, here.output + there.output
    assert json.loads(here.stdout) == json.loads(there.stdout)
    assert not (tmp_path / "other-machine").exists() and any((tmp_path / "local-cache").rglob("*.npy"))


def test_copied_checkpoint_predicts_like_the_original(tiny_checkpoint, batch, tmp_path):
    _, paths = batch
    alone = tmp_path / "elsewhere" / "model.ckpt"
    alone.parent.mkdir()
    shutil.copy(tiny_checkpoint, alone)
    a = RUNNER.invoke(app, ["predict", str(paths[0]), "-c", str(tiny_checkpoint), "--json"])
    b = RUNNER.invoke(app, ["predict", str(paths[0]), "-c", str(alone), "--json"])
    assert a.exit_code == b.exit_code == 0, a.output + b.output
    assert json.loads(a.stdout) == json.loads(b.stdout)
