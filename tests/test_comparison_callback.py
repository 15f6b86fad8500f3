"""DeLongComparison: `fit --compare-to` and `cv --compare-to` give the same paired DeLong z and p as
`alnvid compare` on the same files, for a predictions CSV, a run folder and the manifest's readers."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from alnvid.callbacks import DeLongComparison
from alnvid.cli.main import app
from alnvid.config import DataConfig, RunConfig
from alnvid.cv import run_cv
from alnvid.data.manifest import load_manifest
from alnvid.errors import AlnvidError
from alnvid.train import fit, read_predictions


def _config(cohort, root, out, seed=0) -> RunConfig:
    config = RunConfig(data=DataConfig(frames=4, resize=40, crop_size=32, input_size=32, elastic=False,
                                       num_workers=0, cache_dir=str(root / "cache"), manifest=str(cohort)),
                       out=str(out))
    config.model.name = "resnet50"
    config.trainer.epochs, config.trainer.progress, config.trainer.seed = 1, False, seed
    config.explain.export = False
    return config


def _reference_csv(cohort, path):
    """Another model's per-patient test predictions (any scores in (0, 1)) with a split column."""
    manifest = pd.read_csv(cohort, dtype={"patient_id": str}, keep_default_na=False)
    tests = manifest[manifest["split"].str.startswith("test")]
    probs = np.random.default_rng(3).uniform(0.05, 0.95, len(tests))
    pd.DataFrame({"patient_id": tests["patient_id"], "label": tests["label"], "prob": probs,
                  "split": tests["split"]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def runs(tiny_cohort, tmp_path_factory):
    """A 2-fold CV compared with a reference CSV, and a fit compared with that CV folder (ResNet50, 1 epoch)."""
    root = tmp_path_factory.mktemp("comparison")
    reference = _reference_csv(tiny_cohort, root / "reference.csv")
    cv = run_cv(_config(tiny_cohort, root, root / "cv"), folds=2, compare_to=reference)
    single = fit(_config(tiny_cohort, root, root / "fit", seed=1), compare_to=root / "cv")
    yield SimpleNamespace(root=root, reference=reference, cv=cv, fit=single)
    shutil.rmtree(root, ignore_errors=True)  # about 1 GB of checkpoints


def _compare_cli(a, b) -> dict:
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--n-boot", "10", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["delong"]


def _split_csv(path, split, out):
    table = read_predictions(path)
    table[table["split"] == split].to_csv(out, index=False)
    return out


@pytest.mark.parametrize("split", ["test_a", "test_b"])
def test_cv_best_fold_against_a_csv_equals_alnvid_compare(runs, split):
    written = json.loads((runs.root / "cv" / f"comparison_{split}.json").read_text())
    assert written == runs.cv.comparisons[split]
    (test,) = written["comparisons"].values()
    expected = _compare_cli(runs.root / "cv" / f"predictions_{split}.csv",
                            _split_csv(runs.reference, split, runs.root / f"reference_{split}.csv"))
    assert test["statistic"] == pytest.approx(expected["statistic"], abs=1e-12)
    assert test["p_value"] == pytest.approx(expected["p_value"], abs=1e-12)
    assert (test["ci_low"], test["ci_high"]) == pytest.approx((expected["ci_low"], expected["ci_high"]), abs=1e-12)
    assert written["n"] == 4 and written["n_cases"] == 2


@pytest.mark.parametrize("split", ["test_a", "test_b"])
def test_fit_against_a_run_folder_equals_alnvid_compare(runs, split):
    written = json.loads((runs.root / "fit" / f"comparison_{split}.json").read_text())
    assert written == runs.fit.comparisons[split]
    (test,) = written["comparisons"].values()
    expected = _compare_cli(runs.root / "fit" / f"predictions_{split}.csv", runs.root / "cv" / f"predictions_{split}.csv")
    assert (test["statistic"], test["p_value"]) == pytest.approx((expected["statistic"], expected["p_value"]), abs=1e-12)
    assert test["auc1"] == pytest.approx(runs.fit.test_auc[split], abs=1e-12)


def test_readers_equal_alnvid_compare_model_readers(runs, tiny_cohort, tmp_path):
    comparison = DeLongComparison("readers", tmp_path, manifest=load_manifest(tiny_cohort))
    with pytest.warns(UserWarning, match="test_a"):  # the sonographers read test_b only
        assert comparison.compare("test_a", read_predictions(runs.root / "fit" / "predictions_test_a.csv")) is None
    result = comparison.compare("test_b", read_predictions(runs.root / "fit" / "predictions_test_b.csv"))
    assert json.loads((tmp_path / "comparison_test_b.json").read_text()) == result
    cli = CliRunner().invoke(app, ["compare", "model", "readers", "--runs", str(runs.root / "fit"), "--split", "test_b",
                                   "--n-boot", "10", "--json"])
    assert cli.exit_code == 0, cli.output
    expected = {r["name"]: r["model_vs_reader_delong"] for r in json.loads(cli.output)["readers"]}
    assert set(result["comparisons"]) == set(expected) == {"junior", "senior", "expert"}
    for name, test in result["comparisons"].items():
        assert test["statistic"] == pytest.approx(expected[name]["statistic"], abs=1e-12)
        assert test["p_value"] == pytest.approx(expected[name]["p_value"], abs=1e-12)


def test_after_testing_it_reads_the_modules_epoch_outputs(runs, tmp_path):
    """trainer.test path: per-video (patient_id, label, prob, line) outputs, aggregated per patient as the CSVs
    are."""
    predictions = read_predictions(runs.root / "fit" / "predictions_test_a.csv")
    module = SimpleNamespace(epoch_outputs={"val": [("V1", 1, 0.5, 2)], "test_a": list(
        zip(predictions["patient_id"], predictions["label"], predictions["prob"], range(len(predictions))))})
    comparison = DeLongComparison(runs.root / "cv", tmp_path)
    comparison.on_test_epoch_end(SimpleNamespace(loggers=[]), module)
    assert set(comparison.results) == {"test_a"}
    assert comparison.results["test_a"]["comparisons"] == runs.fit.comparisons["test_a"]["comparisons"]


def test_a_reference_missing_patients_is_refused_before_training(runs, tiny_cohort, tmp_path):
    partial = tmp_path / "partial.csv"
    pd.read_csv(runs.reference).iloc[1:].to_csv(partial, index=False)
    out = tmp_path / "never"
    with pytest.raises(AlnvidError, match="no value for 1 of the 4 test_a patient"):
        fit(_config(tiny_cohort, runs.root, out), compare_to=partial)
    assert not out.exists()
    result = CliRunner().invoke(app, ["fit", "--data", str(tiny_cohort), "--fast", "--out", str(out),
                                      "--compare-to", str(tmp_path / "absent.csv")])
    assert result.exit_code == 2 and "absent.csv" in result.output and not out.exists()


def test_readers_need_reader_columns(tiny_cohort, tmp_path):
    manifest = pd.read_csv(tiny_cohort, dtype=str, keep_default_na=False)
    bare = tiny_cohort.parent / "no_readers.csv"
    manifest[[c for c in manifest.columns if not c.startswith("reader_")]].to_csv(bare, index=False)
    with pytest.raises(AlnvidError, match="reader_<name> columns"):
        DeLongComparison("readers", tmp_path, manifest=load_manifest(bare))
