"""`alnvid stats` and `alnvid compare`: every statistic of a predictions CSV, and two CSVs compared."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from alnvid.cli._common import console, print_json, user_errors
from alnvid.errors import AlnvidError
from alnvid.stats.bootstrap import DEFAULT_N_BOOT
from alnvid.stats.metrics import DiagnosticMetrics
from alnvid.stats.predictions import (
    SCORE_KINDS,
    Comparison,
    GroupSummary,
    PredictionSummary,
    group_column,
    load_predictions,
    summarize_by,
    summarize_predictions,
)

JSON_OPTION = typer.Option(False, "--json", help="Print only JSON (stable keys; NaN and infinity as null).")
N_BOOT_OPTION = typer.Option(DEFAULT_N_BOOT, "--n-boot", help="Stratified bootstrap resamples (pROC default 2000).")
SEED_OPTION = typer.Option(0, "--seed", help="Seed of the bootstrap resampling.")
THRESHOLD_OPTION = typer.Option(None, "--threshold", help="Call a patient positive when prob >= this. Default 0.5 "
                                "for probabilities; none for other scores (threshold-free statistics only).")
SCORES_OPTION = typer.Option("probability", "--scores", help=f"What the prob column holds: {', '.join(SCORE_KINDS)}. "
                             "Probabilities must lie in [0, 1]; the others get no 0.5 threshold.")


def _p(p: float) -> str:
    """A p-value as 'p = 0.0272' or 'p < 0.0001'."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


def _ci(low: float | None, high: float | None, digits: int = 3) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "–"
    return f"{low:.{digits}f} – {high:.{digits}f}"


def _metrics_table(title: str, metrics: DiagnosticMetrics) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("metric", "value", "counts", "95% CI", "CI method"):
        table.add_column(column)
    for m in metrics.metrics():
        table.add_row(m.name, f"{m.value:.3f}", m.counts, _ci(m.ci_low, m.ci_high), m.method)
    return table


def _print_summary(s: PredictionSummary) -> None:
    kind = "" if s.scores == "probability" else f", scores are {s.scores}s"
    console.print(f"[bold]{s.path}[/]: {s.n} patients ({s.n_cases} positive, {s.n_controls} negative{kind})")
    auc = Table(title="Model AUC", title_justify="left")
    for column in ("statistic", "value", "95% CI", "method"):
        auc.add_column(column)
    auc.add_row("AUC", f"{s.auc_delong.auc:.4f}", _ci(s.auc_delong.ci_low, s.auc_delong.ci_high, 4), "DeLong")
    auc.add_row("AUC", f"{s.auc_bootstrap.auc:.4f}", _ci(s.auc_bootstrap.ci_low, s.auc_bootstrap.ci_high, 4),
                f"bootstrap, {s.auc_bootstrap.n_boot} stratified resamples, seed {s.auc_bootstrap.seed}")
    auc.add_row("average precision", f"{s.average_precision:.4f}", "–", "step-wise")
    console.print(auc)
    if s.metrics is not None:
        column = "prob" if s.scores == "probability" else s.scores
        console.print(_metrics_table(f"Model at {column} >= {s.threshold:g}", s.metrics))
    else:
        console.print(f"[dim]No threshold metrics: the scores are {s.scores}s, not probabilities "
                      "(give --threshold on their scale to call patients).[/]")
    y = s.youden
    scale = "probability" if s.scores == "probability" else f"{s.scores} scale"
    if y is None:
        console.print(f"Youden-optimal threshold: none ({s.youden_note}).", highlight=False)
    else:
        console.print(f"Youden-optimal threshold {y.threshold:.4g} (on the {scale}): "
                      f"sensitivity {y.sensitivity:.3f} ({y.tp}/{y.tp + y.fn}), "
                      f"specificity {y.specificity:.3f} ({y.tn}/{y.tn + y.fp}) "
                      "[dim](chosen on these data: optimistic)[/]")
    for r in s.readers:
        console.print(_metrics_table(f"Reader {r.name}", r.metrics))
        if r.auc is not None:
            console.print(f"  reader AUC {r.auc.auc:.4f} (DeLong 95% CI {_ci(r.auc.ci_low, r.auc.ci_high, 4)}); "
                          f"model − reader: Z = {r.vs_model_delong.statistic:.3f}, {_p(r.vs_model_delong.p_value)}")
        mc = r.vs_model_mcnemar
        if mc is None:
            continue
        kappa = "undefined" if r.vs_model_kappa is None else (
            f"{r.vs_model_kappa.kappa:.3f} (95% CI {_ci(r.vs_model_kappa.ci_low, r.vs_model_kappa.ci_high)})")
        console.print(f"  model vs reader calls: McNemar exact {_p(mc.p_value_exact)} "
                      f"(discordant {mc.b} model-only / {mc.c} reader-only); Cohen's kappa {kappa}")
    for pair, k in s.reader_kappa.items():
        text = "undefined" if k is None else f"{k.kappa:.3f} (95% CI {_ci(k.ci_low, k.ci_high)})"
        console.print(f"Cohen's kappa {pair.replace('~', ' vs ')}: {text}")
    if s.fleiss is not None:
        console.print(f"Fleiss' kappa ({s.fleiss.n_raters} readers): {s.fleiss.kappa:.3f}, {_p(s.fleiss.p_value)}")


def _groups_table(column: str, groups: list[GroupSummary]) -> Table:
    table = Table(title=f"By {column} (DeLong 95% CI where a {column} has 2 or more patients of each class)",
                  title_justify="left")
    for name in (column, "patients", "positive", "negative", "mean prob", "AUC", "95% CI"):
        table.add_column(name)
    for g in groups:
        ci = _ci(g.auc_delong.ci_low, g.auc_delong.ci_high) if g.auc_delong else "–"
        table.add_row(g.group, str(g.n), str(g.n_cases), str(g.n_controls), f"{g.mean_prob:.3f}",
                      "– (one class)" if g.auc is None else f"{g.auc:.3f}", ci)
    return table


@user_errors
def stats(
    pred_csv: Path = typer.Argument(..., help="predictions CSV: patient_id,label,prob[,split,reader_<name>[_score]]"),
    json: bool = JSON_OPTION,
    split: str = typer.Option(None, "--split", help="Only the patients of this split (needs a split column)."),
    n_boot: int = N_BOOT_OPTION,
    seed: int = SEED_OPTION,
    threshold: Optional[float] = THRESHOLD_OPTION,
    scores: str = SCORES_OPTION,
    readers: Path = typer.Option(None, "--readers", help="Manifest (or CSV with patient_id and reader_<name>"
                                 "[_score] columns) whose readers' calls join the predictions, e.g. a run's "
                                 "predictions_test_a.csv with the cohort's reader_expert."),
    by: Optional[str] = typer.Option(None, "--by", help="Also give the AUC per value of this column, e.g. site or "
                                     "fold: from the predictions CSV, or from --manifest."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="With --by: the cohort manifest (or any CSV "
                                            "with patient_id) that holds the --by column. Default: PRED_CSV."),
) -> None:
    """AUC with DeLong and bootstrap 95% CIs, metrics at the threshold with exact CIs, readers and kappa; with
    --by, the AUC per site (or any other column)."""
    from alnvid.io.table import read_csv_table

    if manifest is not None and by is None:
        raise AlnvidError("--manifest is only used with --by", fix="add --by COLUMN (e.g. --by site), or leave "
                          "out --manifest.")
    pred = load_predictions(pred_csv, scores)
    if split is not None:
        pred = pred.select_split(split)
    groups = None
    if by is not None:
        source = manifest or pred_csv
        table = read_csv_table(source, "table", dtype=str, keep_default_na=False)
        groups = summarize_by(pred, group_column(pred, table, by, str(source)))
    if readers is not None:
        from alnvid.compare import join_readers, readers_table

        pred = join_readers(pred, readers_table(readers), split or pred_csv.name)
    summary = summarize_predictions(pred, n_boot=n_boot, seed=seed, threshold=threshold)
    if json:
        print_json({**summary.to_dict(), **({"by": {"column": by, "groups": [g.to_dict() for g in groups]}}
                                             if groups is not None else {})})
    else:
        _print_summary(summary)
        if groups is not None:
            console.print(_groups_table(by, groups))


def print_comparison(c: Comparison) -> None:
    """Human-readable comparison: DeLong (paired or explicitly unpaired), bootstrap test, McNemar."""
    d, b = c.delong, c.bootstrap
    console.print(f"A: {c.a.path} ({c.a.n} patients), AUC {d.auc1:.4f}")
    console.print(f"B: {c.b.path} ({c.b.n} patients), AUC {d.auc2:.4f}")
    if c.paired:
        console.print(f"[bold]Paired[/] on {c.n_common} common patients. AUC A − B = {d.difference:.4f} "
                      f"(95% CI {_ci(d.ci_low, d.ci_high, 4)})")
        console.print(f"DeLong paired test: Z = {d.statistic:.3f}, {_p(d.p_value)} "
                      f"(one-sided A > B: {_p(d.p_greater)})")
    else:
        console.print(f"[bold yellow]UNPAIRED[/] ({c.note}). AUC A − B = {d.difference:.4f}")
        console.print(f"DeLong unpaired test: D = {d.statistic:.3f}, df = {d.df:.1f}, {_p(d.p_value)} "
                      f"(one-sided A > B: {_p(d.p_greater)})")
    console.print(f"Bootstrap test ({b.n_boot} {'paired' if b.paired else 'independent'} stratified resamples, "
                  f"seed {b.seed}): D = {b.statistic:.3f}, {_p(b.p_value)}, "
                  f"95% CI of A − B {_ci(b.ci_low, b.ci_high, 4)}")
    if c.mcnemar is None and c.paired:
        console.print(f"[dim]No McNemar test: no threshold calls patients on these {c.a.scores} scores.[/]")
    if c.mcnemar is not None:
        m = c.mcnemar
        console.print(f"McNemar on calls at prob >= {c.threshold:g}: {m.b} positive by A only, {m.c} by B only; "
                      f"exact {_p(m.p_value_exact)}, χ² = {m.statistic:.3f} ({_p(m.p_value)}), "
                      f"with continuity correction {_p(m.p_value_corrected)}")
