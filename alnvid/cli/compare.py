"""`alnvid compare`: two prediction CSVs, two or more run folders, or groups of runs (video static,
model readers)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from alnvid.cli._common import console, print_json, user_errors
from alnvid.cli.stats import (
    JSON_OPTION,
    N_BOOT_OPTION,
    SCORES_OPTION,
    SEED_OPTION,
    THRESHOLD_OPTION,
    _p,
    print_comparison,
)
from alnvid.errors import AlnvidError
from alnvid.stats.roc import STUDY_THRESHOLD

GROUPS = ("video", "static")


@user_errors
def compare(
    targets: list[str] = typer.Argument(..., help="Two predictions CSVs; or run folders; or selectors of runs under "
                                        "--runs: 'video static' (each video model against each static model), "
                                        "a model or run name, or 'model readers' (best video model vs sonographers)."),
    runs: Optional[Path] = typer.Option(None, "--runs", help="Folder holding run folders (for selectors)."),
    readers: Optional[Path] = typer.Option(None, "--readers", help="CSV with patient_id and reader_<name>"
                                           "[_score] columns (default: the runs' manifest)."),
    split: str = typer.Option("test_b", "--split", help="Split the readers read (for 'model readers')."),
    json: bool = JSON_OPTION,
    n_boot: int = N_BOOT_OPTION,
    seed: int = SEED_OPTION,
    threshold: Optional[float] = THRESHOLD_OPTION,
    scores: str = SCORES_OPTION,
) -> None:
    """Compare AUCs by DeLong's test (paired on the same patients, otherwise unpaired and said so), with the
    paired bootstrap test, McNemar's tests and Holm's correction when several pairs are compared. Runs are
    compared on each test split and on all test splits pooled; 'p A > B' is DeLong's one-sided p."""
    csvs = [t for t in targets if t.lower().endswith(".csv")]
    if len(targets) == 2 and len(csvs) == 2:
        from alnvid.stats import compare_csvs

        comparison = compare_csvs(targets[0], targets[1], n_boot=n_boot, seed=seed, threshold=threshold,
                                  scores=scores)
        print_json(comparison.to_dict()) if json else print_comparison(comparison)
        return
    if csvs:
        raise AlnvidError(f"compare takes exactly two predictions CSVs, or run folders (got {len(csvs)} CSV "
                          f"file(s) among {len(targets)} argument(s))",
                          fix="compare CSVs two at a time (`alnvid compare a.csv b.csv`), or give run folders "
                              "(`alnvid compare RUN_A RUN_B RUN_C`, Holm-corrected) or selectors with --runs.")
    if scores != "probability":
        raise AlnvidError("--scores applies to predictions CSVs only: run folders hold probabilities",
                          fix="leave --scores out when comparing runs.")
    threshold = STUDY_THRESHOLD if threshold is None else threshold
    if targets == ["model", "readers"]:
        _compare_readers(runs, readers, split, json, n_boot, seed)
        return
    _compare_runs(targets, runs, json, n_boot, seed, threshold)


def _load_runs(targets: list[str], runs: Path | None):
    from alnvid.compare import select_runs
    from alnvid.runs import find_runs, load_run

    if runs is None:
        if any(t in GROUPS or t == "model" for t in targets) or not all(Path(t).is_dir() for t in targets):
            raise AlnvidError(f"'{' '.join(targets)}' needs --runs FOLDER (or give run folders / two CSV files)")
        return [[load_run(t)] for t in targets]
    found = find_runs(runs)
    return [select_runs(found, t) for t in targets]


def _compare_runs(targets, runs, json, n_boot, seed, threshold) -> None:
    from alnvid.compare import adjust_holm, compare_runs

    groups = _load_runs(targets, runs)
    if len(groups) < 2:
        raise AlnvidError("give at least two runs or groups to compare")
    results, skipped = [], {}
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            found = compare_runs(groups[i], groups[j], n_boot=n_boot, seed=seed, threshold=threshold)
            results += found.pairs
            for split, reason in found.skipped.items():
                skipped.setdefault(split, reason)
    results = adjust_holm(results)  # one family per split, across every pair compared
    if json:
        print_json({"comparisons": [r.to_dict() for r in results], "skipped_splits": skipped})
        return
    for split, reason in skipped.items():
        console.print(f"[yellow]{split} not compared:[/] {reason}")
    if not results:
        raise AlnvidError("nothing to compare: no test split shared by these runs is large enough",
                          fix="evaluate the runs on the same test splits, with at least 2 cases and 2 controls.")
    table = Table("split", "A", "B", "AUC A", "AUC B", "pairing", "statistic", "p DeLong", "p A > B", "p Holm",
                  "p bootstrap", "p McNemar acc / sens / spec", title="DeLong comparisons (p A > B: one-sided)")
    for r in results:
        d = r.comparison.delong
        mcnemar = " / ".join(_p(m.p_value_exact).removeprefix("p = ") if m else "–"
                             for m in (r.mcnemar_accuracy, r.mcnemar_sensitivity, r.mcnemar_specificity))
        table.add_row(r.split, r.run_a, r.run_b, f"{d.auc1:.3f}", f"{d.auc2:.3f}",
                      f"paired ({r.comparison.n_common})" if r.comparison.paired else "[yellow]UNPAIRED[/]",
                      f"{'Z' if d.df is None else 't'} = {d.statistic:.3f}", _p(d.p_value), _p(d.p_greater),
                      _p(r.p_holm),
                      _p(r.comparison.bootstrap.p_value), mcnemar)
    console.print(table)
    unpaired = [r for r in results if not r.comparison.paired]
    if unpaired:
        console.print(f"[yellow]Unpaired:[/] {unpaired[0].comparison.note}")


def _compare_readers(runs, readers, split, json, n_boot, seed) -> None:
    from alnvid.cli.stats import _print_summary
    from alnvid.compare import compare_with_readers, readers_table
    from alnvid.report import best_run, manifest_of
    from alnvid.runs import find_runs

    if runs is None:
        raise AlnvidError("'model readers' needs --runs FOLDER")
    found = find_runs(runs)
    run = best_run(found, split)
    source = readers or manifest_of(found)
    if source is None:
        raise AlnvidError("no reader calls found", fix="pass --readers CSV with reader_<name> columns.")
    summary = compare_with_readers(run, readers_table(source), split, n_boot=n_boot, seed=seed)
    if json:
        print_json({"model": run.name, "split": split, **summary.to_dict()})
        return
    console.print(f"[bold]{run.name}[/] ({run.model}) against the sonographers on {split}")
    _print_summary(summary)
