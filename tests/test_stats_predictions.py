"""Predictions CSVs: loading errors, paired/unpaired comparison, and the `alnvid stats` / `compare` CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from alnvid.cli.main import app
from alnvid.errors import AlnvidError, InputFileError, StatsInputError
from alnvid.stats import compare_csvs, load_predictions, summarize_predictions

FIXTURES = Path(__file__).parent / "fixtures" / "proc_asah"
COMPARISON_KEYS = ["a", "b", "paired", "n_common", "threshold", "delong", "bootstrap", "mcnemar", "note"]



def _write(df: pd.DataFrame, marker: str, path: Path, **extra) -> Path:
    out = pd.DataFrame({"patient_id": "P" + df.rowname.astype(str), "label": (df.outcome == "Poor").astype(int),
                        "prob": df[marker], **extra})
    out.to_csv(path, index=False)
    return path


@pytest.fixture()
def pair(asah, tmp_path) -> tuple[Path, Path]:
    shuffled = asah.sample(frac=1.0, random_state=0)  # pairing must go by patient_id, not row order
    return _write(asah, "wfns", tmp_path / "wfns.csv"), _write(shuffled, "s100b", tmp_path / "s100b.csv")


def test_paired_comparison_matches_proc(pair):
    c = compare_csvs(*pair, n_boot=500, seed=0, scores="score")  # WFNS grade and S100B level: not probabilities
    assert c.paired and c.n_common == 113 and c.note is None
    assert c.delong.statistic == pytest.approx(2.20898359144091, rel=1e-9)
    assert c.delong.p_value == pytest.approx(0.0271757822291882, rel=1e-9)
    assert c.bootstrap.paired and c.mcnemar is None and c.threshold is None  # no 0.5 threshold on their scales
    assert list(c.to_dict()) == COMPARISON_KEYS
    with_threshold = compare_csvs(*pair, n_boot=100, seed=0, threshold=0.5, scores="score")
    assert with_threshold.mcnemar is not None and with_threshold.threshold == 0.5


def test_unpaired_comparison_is_flagged(asah, tmp_path):
    a = _write(asah.iloc[:60], "wfns", tmp_path / "a.csv")
    other = asah.iloc[60:].assign(rowname=asah.iloc[60:].rowname + 1000)
    b = _write(other, "s100b", tmp_path / "b.csv")
    c = compare_csvs(a, b, n_boot=200, scores="score")
    d = c.to_dict()
    assert list(d) == COMPARISON_KEYS
    assert d["paired"] is False and d["mcnemar"] is None and d["n_common"] == 0
    assert d["delong"]["df"] > 0 and "unpaired" in d["note"]


def test_cli_compare_text_and_json(pair):
    runner = CliRunner()
    text = runner.invoke(app, ["compare", str(pair[0]), str(pair[1]), "--n-boot", "200", "--scores", "score"])
    assert text.exit_code == 0, text.output
    assert "Z = 2.209" in text.output and "p = 0.0272" in text.output
    js = runner.invoke(app, ["compare", str(pair[0]), str(pair[1]), "--json", "--n-boot", "200", "--scores", "score"])
    assert js.exit_code == 0, js.output
    payload = json.loads(js.stdout)
    assert list(payload) == COMPARISON_KEYS
    assert f"{payload['delong']['statistic']:.3f}" == "2.209"
    assert f"{payload['delong']['p_value']:.4f}" == "0.0272"


def test_cli_stats_with_readers(asah, tmp_path):
    y = (asah.outcome == "Poor").astype(int).to_numpy()
    path = _write(asah, "s100b", tmp_path / "p.csv", split=np.where(np.arange(113) < 80, "test", "val"),
                  reader_a=(asah.wfns >= 3).astype(int), reader_a_score=asah.wfns, reader_b=y,
                  reader_c=(asah.ndka > 12).astype(int))
    runner = CliRunner()
    js = runner.invoke(app, ["stats", str(path), "--json", "--n-boot", "200", "--scores", "score", "--threshold", "0.5"])
    assert js.exit_code == 0, js.output
    payload = json.loads(js.stdout)
    assert payload["auc_delong"]["ci_low"] == pytest.approx(0.630118211761623, rel=1e-9)
    assert payload["metrics"]["sensitivity"]["counts"] == "12/41"
    assert payload["metrics"]["lr_positive"]["value"] == pytest.approx((12 / 41) / (2 / 72))
    reader_a = payload["readers"][0]
    assert reader_a["auc"]["auc"] == pytest.approx(0.823678861788618, rel=1e-9)
    assert reader_a["model_vs_reader_delong"]["statistic"] == pytest.approx(-2.20898359144091, rel=1e-9)
    assert payload["readers"][1]["metrics"]["lr_positive"]["value"] is None  # infinite -> null
    assert set(payload["reader_kappa"]) == {"a~b", "a~c", "b~c"} and payload["fleiss_kappa"]["n_raters"] == 3
    text = runner.invoke(app, ["stats", str(path), "--split", "test", "--n-boot", "200", "--scores", "score",
                               "--threshold", "0.5"])
    assert text.exit_code == 0, text.output
    assert "80 patients" in text.output and "Reader a" in text.output and "Fleiss" in text.output


@pytest.mark.parametrize("content, error, message", [
    ("patient_id,label\nP1,0\n", AlnvidError, "missing column"),
    ("patient_id,label,prob\nP1,0,0.1\nP2,1,\n", StatsInputError, "P2"),
    ("patient_id,label,prob\nP1,0,0.1\nP1,1,0.4\n", StatsInputError, "duplicated"),
    ("patient_id,label,prob\nP1,0,0.1\nP2,2,0.4\n", StatsInputError, "0 or 1"),
])
def test_load_errors(tmp_path, content, error, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(error, match=message) as info:
        load_predictions(path)
    assert str(path) in info.value.message


def test_missing_file_and_single_class(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        load_predictions(tmp_path / "nope.csv")
    path = tmp_path / "one.csv"
    path.write_text("patient_id,label,prob\nP1,1,0.1\nP2,1,0.4\n")
    with pytest.raises(StatsInputError, match="positive"):
        summarize_predictions(load_predictions(path), n_boot=100)


def test_cli_error_is_red_message_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")])
    assert result.exit_code == 2
    assert "not found" in result.output and "Traceback" not in result.output


def test_auc_by_group_equals_mann_whitney_on_each_group(asah, tmp_path):
    """`stats --by gender` on aSAH's S100B: each group's AUC is its Mann-Whitney U / (cases x controls), with the
    DeLong CI of that group alone; a one-class group gets its mean probability and no AUC."""
    from scipy.stats import mannwhitneyu

    from alnvid.stats.delong import delong_ci

    table = asah.assign(group=asah["gender"])
    table.loc[table.index[table["outcome"] == "Good"][:3], "group"] = "all_good"  # a group of one class
    path = _write(table, "s100b", tmp_path / "s100b.csv", group=table["group"].to_numpy())
    result = CliRunner().invoke(app, ["stats", str(path), "--scores", "score", "--by", "group", "--n-boot", "10",
                                      "--json"])
    assert result.exit_code == 0, result.output
    groups = {g["group"]: g for g in json.loads(result.output)["by"]["groups"]}
    assert list(groups) == ["Female", "Male", "all_good"] and sum(g["n"] for g in groups.values()) == len(table)
    for name in ("Female", "Male"):
        part = table[table["group"] == name]
        poor = part["outcome"] == "Poor"
        u = mannwhitneyu(part.loc[poor, "s100b"], part.loc[~poor, "s100b"]).statistic
        assert groups[name]["auc"] == pytest.approx(u / (poor.sum() * (~poor).sum()), abs=1e-12)
        ci = delong_ci(poor.astype(int).to_numpy(), part["s100b"].to_numpy())
        assert groups[name]["auc_delong"]["ci_low"] == pytest.approx(ci.ci_low, abs=1e-12)
    one_class = groups["all_good"]
    assert one_class["auc"] is None and one_class["n_cases"] == 0
    assert one_class["mean_prob"] == pytest.approx(table.loc[table["group"] == "all_good", "s100b"].mean())


def test_by_group_from_a_manifest_and_its_errors(asah, tmp_path):
    path = _write(asah, "s100b", tmp_path / "s100b.csv")
    manifest = pd.DataFrame({"patient_id": "P" + asah.rowname.astype(str), "site": asah["gender"]})
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    base = ["stats", str(path), "--scores", "score", "--n-boot", "10"]
    manifest["site"] = np.where(asah["gender"] == "Male", "10", "9")  # numbered sites sort as numbers
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    text = CliRunner(env={"COLUMNS": "200"}).invoke(app, [*base, "--by", "site", "--manifest",
                                                          str(tmp_path / "manifest.csv")])
    assert text.exit_code == 0, text.output
    assert "By site" in text.output and text.output.index("│ 9 ") < text.output.index("│ 10 ")
    manifest.iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    refusals = {
        "1 patient(s) of the predictions are not in": ["--by", "site", "--manifest", str(tmp_path / "short.csv")],
        "has no site column": ["--by", "site"],
        "--manifest is only used with --by": ["--manifest", str(tmp_path / "manifest.csv")],
    }
    for message, options in refusals.items():
        result = CliRunner(env={"COLUMNS": "200"}).invoke(app, [*base, *options])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
