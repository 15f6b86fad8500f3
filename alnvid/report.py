"""A report a paper can use: the study's Tables 1-3, comparison p values and figures, as Markdown, one
self-contained HTML page (figures embedded, opens offline) and CSV tables.

Table 1: cohort characteristics per split with Mann-Whitney / chi-square (Fisher) p values.
Table 2: each model's AUC with 95% DeLong CI, accuracy, sensitivity, specificity, PPV and NPV with counts
and Clopper-Pearson CIs, per split. Table 3: the best video model against the sonographers.
Figures: training curves, ROC video vs static, PR curves, ROC model vs readers, calibration.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from alnvid.compare import compare_runs, compare_with_readers, readers_table
from alnvid.data.manifest import load_manifest, reader_names
from alnvid.errors import AlnvidError, StatsInputError
from alnvid.plots import (
    plot_calibration,
    plot_pr_curves,
    plot_roc_curves,
    plot_training_curves,
)
from alnvid.runs import RunRecord, find_runs
from alnvid.stats import (
    PredictionSummary,
    auc,
    cohort_table,
    delong_ci,
    diagnostic_metrics,
    pr_curve,
    roc_curve,
)
from alnvid.utils import atomic_write_csv, atomic_write_text

TABLE1_EXCLUDED = {"patient_id", "path", "still_path", "split", "crop_box", "line", "site"}
"""Manifest columns that are bookkeeping, not patient characteristics."""


@dataclass
class Report:
    """What was written, and the tables, for callers that want the numbers."""

    out: Path
    table1: pd.DataFrame | None
    table2: pd.DataFrame
    table3: pd.DataFrame | None
    comparisons: pd.DataFrame
    files: list[Path] = field(default_factory=list)


def table2(runs: list[RunRecord]) -> pd.DataFrame:
    """One row per model and prediction set: AUC (DeLong CI) and metrics at P >= 0.5 with counts and CIs."""
    rows = []
    for run in runs:
        for split, predictions in run.predictions.items():
            labels, probs = predictions["label"].to_numpy(), predictions["prob"].to_numpy()
            if len(np.unique(labels)) < 2:
                continue
            try:
                ci = delong_ci(labels, probs)
                low, high = ci.ci_low, ci.ci_high
            except StatsInputError:  # fewer than 2 cases or controls: an AUC, but no variance
                low = high = float("nan")
            metrics = diagnostic_metrics(labels, probs)
            row = {"model": run.name, "backbone": run.model, "kind": run.kind, "split": split,
                   "optimistic": selected_on(run, split), "n": len(labels),
                   "auc": auc(labels, probs), "auc_ci_low": low, "auc_ci_high": high}
            for metric in (metrics.accuracy, metrics.sensitivity, metrics.specificity, metrics.ppv, metrics.npv):
                row |= {metric.name: metric.value, f"{metric.name}_counts": metric.counts,
                        f"{metric.name}_ci_low": metric.ci_low, f"{metric.name}_ci_high": metric.ci_high}
            rows.append(row)
    return pd.DataFrame(rows)


def selected_on(run: RunRecord, split: str) -> bool:
    """Whether `split`'s predictions come from a model selected on those same patients (best validation epoch):
    'oof_selected' of a CV, 'val' of a fit with the default selection. Their AUC is optimistic."""
    if split == "oof_selected":
        return True
    return split == "val" and run.summary.get("selection", "best") == "best"


def table3(summary: PredictionSummary, model_name: str) -> pd.DataFrame:
    """The model and each reader: AUC, accuracy/sensitivity/specificity, and the model-vs-reader p values."""
    def describe(name: str, metrics, auc) -> dict:
        row = {"rater": name, "auc": None if auc is None else auc.auc,
               "auc_ci_low": None if auc is None else auc.ci_low, "auc_ci_high": None if auc is None else auc.ci_high}
        for metric in (metrics.accuracy, metrics.sensitivity, metrics.specificity, metrics.ppv, metrics.npv):
            row |= {metric.name: metric.value, f"{metric.name}_counts": metric.counts}
        return row

    rows = [describe(model_name, summary.metrics, summary.auc_delong) | {"p_delong_vs_model": None,
                                                                        "p_mcnemar_vs_model": None}]
    for reader in summary.readers:
        rows.append(describe(f"reader {reader.name}", reader.metrics, reader.auc) | {
            "p_delong_vs_model": None if reader.vs_model_delong is None else reader.vs_model_delong.p_value,
            "p_mcnemar_vs_model": reader.vs_model_mcnemar.p_value_exact})
    return pd.DataFrame(rows)


def build_report(runs_root: str | Path, out: str | Path, *, manifest: str | Path | None = None,
                 reader_split: str = "test_b", n_boot: int = 2000, seed: int = 0) -> Report:
    """Read every finished run under `runs_root` and write report.md, report.html, tables/*.csv, figures/*.png."""
    runs = find_runs(runs_root)
    out = Path(out)
    figures, tables = out / "figures", out / "tables"
    manifest = Path(manifest) if manifest else manifest_of(runs)
    written: list[Path] = []

    cohort = table1(manifest) if manifest is not None and manifest.is_file() else None
    t2 = table2(runs)
    video = [r for r in runs if r.kind == "video"]
    static = [r for r in runs if r.kind == "static"]
    compared = compare_runs(video, static, n_boot=n_boot, seed=seed) if video and static else None
    pairs = compared.pairs if compared else []
    notes = [f"{split} not compared: {reason}" for split, reason in (compared.skipped if compared else {}).items()]
    comparisons = pd.DataFrame([{
        "split": p.split, "video model": p.run_a, "static model": p.run_b, "paired": p.comparison.paired,
        "auc video": p.comparison.delong.auc1, "auc static": p.comparison.delong.auc2,
        "z or t": p.comparison.delong.statistic, "p (DeLong)": p.comparison.delong.p_value,
        "p (DeLong, video > static)": p.comparison.delong.p_greater, "p (Holm)": p.p_holm,
        "p (bootstrap)": p.comparison.bootstrap.p_value,
        "p McNemar accuracy": None if p.mcnemar_accuracy is None else p.mcnemar_accuracy.p_value_exact,
        "p McNemar sensitivity": None if p.mcnemar_sensitivity is None else p.mcnemar_sensitivity.p_value_exact,
        "p McNemar specificity": None if p.mcnemar_specificity is None else p.mcnemar_specificity.p_value_exact,
    } for p in pairs])

    t3, reader_summary, best_video = None, None, None
    if manifest is not None and manifest.is_file() and reader_names(pd.read_csv(manifest, nrows=0).columns):
        if any(reader_split in r.predictions for r in runs):
            best_video = best_run(runs, reader_split)
            try:
                reader_summary = compare_with_readers(best_video, readers_table(manifest), reader_split,
                                                      n_boot=n_boot, seed=seed)
                t3 = table3(reader_summary, best_video.name)
            except AlnvidError as error:  # too few cases, or reader calls missing for some patients
                notes.append(f"Table 3 not computed on {reader_split}: {error.problem}")

    for name, frame in (("table1_cohort", cohort), ("table2_performance", t2), ("table3_readers", t3),
                        ("comparisons_video_vs_static", comparisons)):
        if frame is not None:
            atomic_write_csv(frame, tables / f"{name}.csv")
            written.append(tables / f"{name}.csv")

    written += _figures(runs, figures, best_video, reader_summary, reader_split)
    markdown = _markdown(runs, cohort, t2, t3, comparisons, reader_split, best_video, written, out, notes)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", _html(markdown, out))
    written += [out / "report.md", out / "report.html"]
    return Report(out, cohort, t2, t3, comparisons, written)


def manifest_of(runs: list[RunRecord]) -> Path | None:
    """The manifest the runs were trained on (from their saved configuration)."""
    for run in runs:
        if run.config:
            path = (yaml.safe_load(run.config) or {}).get("data", {}).get("manifest")
            if path:
                return Path(path)
    return None


def best_run(runs: list[RunRecord], split: str) -> RunRecord:
    """The video model (any model if there is none) for the reader study on `split`, chosen on development data
    (out-of-fold AUC of a CV run, validation AUC of a single fit), never on the test split itself."""
    candidates = [r for r in runs if r.kind == "video" and split in r.predictions] or \
        [r for r in runs if split in r.predictions]
    if not candidates:
        raise AlnvidError(f"no run has predictions for split '{split}'", fix="choose the split the readers read.")
    return max(candidates, key=lambda r: r.summary.get("oof_auc", r.summary.get("val_auc", float("nan"))))


def table1(manifest: Path) -> pd.DataFrame | None:
    """Cohort characteristics per split, one row per patient (their first video).

    Only numeric columns and categorical columns with few levels (at most 12, and fewer than half the
    patients) are described: free-text or identifying columns (names, record numbers, dates) never reach the
    report.
    """
    table = load_manifest(manifest, check_files=False).table.drop_duplicates("patient_id")
    if table["split"].nunique() < 2:
        return None
    columns, categorical = [], []
    for column in table.columns:
        if column in TABLE1_EXCLUDED or column.startswith("reader_"):
            continue
        values = table[column].replace("", np.nan)
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().sum() == values.notna().sum() and values.notna().any() and column != "label":
            table[column] = numeric
            columns.append(column)
        elif values.nunique() <= min(12, len(table) / 2):
            columns.append(column)
            categorical.append(column)
    return cohort_table(table, "split", columns, categorical=categorical).table


def _figures(runs: list[RunRecord], folder: Path, best_video: RunRecord | None,
             readers: PredictionSummary | None, reader_split: str) -> list[Path]:
    written = []
    for run in runs:
        for label, epochs in run.epochs.items():
            suffix = "" if label == "fit" else "_" + label.replace(" ", "")
            written.append(plot_training_curves(epochs, folder / f"curves_{run.name}{suffix}.png",
                                                title=f"{run.name} ({run.model}) {label}"))
    splits = sorted({s for r in runs for s in r.predictions if s != "val"})
    for split in splits:
        with_split = [r for r in runs if split in r.predictions and r.predictions[split]["label"].nunique() == 2]
        if not with_split:
            continue
        rocs, prs, calibration = {}, {}, {}
        for run in with_split:
            labels, probs = run.predictions[split]["label"].to_numpy(), run.predictions[split]["prob"].to_numpy()
            roc = roc_curve(labels, probs)
            pr = pr_curve(labels, probs)
            name = f"{run.name} [{run.kind}]"
            rocs[name] = (roc.fpr, roc.tpr, roc.auc)
            prs[name] = (pr.recall, pr.precision, pr.average_precision)
            calibration[name] = (labels, probs)
        prevalence = float(with_split[0].predictions[split]["label"].mean())
        written.append(plot_roc_curves(rocs, folder / f"roc_{split}.png", title=f"ROC, video vs static ({split})"))
        written.append(plot_pr_curves(prs, folder / f"pr_{split}.png", title=f"Precision-recall ({split})",
                                      prevalence=prevalence))
        written.append(plot_calibration(calibration, folder / f"calibration_{split}.png",
                                        title=f"Calibration ({split})"))
    if best_video is not None and readers is not None:
        table = best_video.predictions[reader_split]
        labels, probs = table["label"].to_numpy(), table["prob"].to_numpy()
        roc = roc_curve(labels, probs)
        points = {f"reader {r.name}": (1 - r.metrics.specificity.value, r.metrics.sensitivity.value)
                  for r in readers.readers}
        written.append(plot_roc_curves({best_video.name: (roc.fpr, roc.tpr, roc.auc)},
                                       folder / f"roc_readers_{reader_split}.png",
                                       title=f"Model vs sonographers ({reader_split})", points=points))
    return written


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _p(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _auc_cell(value, low, high) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if low is None or not np.isfinite(low):
        return f"{value:.3f} (no CI: too few cases or controls)"
    return f"{value:.3f} ({low:.3f}–{high:.3f})"


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _markdown(runs, cohort, t2, t3, comparisons, reader_split, best_video, files, out, notes) -> str:
    lines = ["# alnvid report", "",
             "Prediction of axillary lymph-node metastasis from breast ultrasound videos. AUC with 95% DeLong "
             "CI; proportions with counts and exact (Clopper-Pearson) 95% CI; a patient is called positive at "
             "P >= 0.5. 'oof' = out-of-fold cross-validation predictions, each fold's last epoch (a count fixed "
             "before training): an unbiased estimate; 'oof_selected' = the same from each fold's best validation "
             "epoch, chosen on these very patients; 'val' = a single run's validation set. Rows marked "
             "'(optimistic)' come from a model selected on the patients they score.",
             ""]
    if cohort is not None:
        view = cohort.assign(p_value=cohort["p_value"].map(lambda p: "" if pd.isna(p) else _p(p))).fillna("")
        lines += ["## Table 1. Cohort characteristics (label 1 = ALN metastasis)", "", _markdown_table(view), ""]
    if len(t2):
        view = pd.DataFrame({
            "model": t2["model"] + " (" + t2["kind"] + ")",
            "split": [f"{s} (optimistic)" if o else s for s, o in zip(t2["split"], t2["optimistic"])], "n": t2["n"],
            "AUC (95% CI)": [_auc_cell(a, lo, hi) for a, lo, hi in zip(t2["auc"], t2["auc_ci_low"], t2["auc_ci_high"])],
            **{name: [f"{100 * v:.1f}% ({c}) [{100 * lo:.1f}–{100 * hi:.1f}]" if np.isfinite(v) else "–"
                      for v, c, lo, hi in zip(t2[key], t2[f"{key}_counts"], t2[f"{key}_ci_low"],
                                              t2[f"{key}_ci_high"])]
               for key, name in (("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
                                 ("specificity", "specificity"), ("ppv", "PPV"), ("npv", "NPV"))},
        })
        lines += ["## Table 2. Diagnostic performance", "", _markdown_table(view), ""]
    if len(comparisons):
        view = comparisons.copy()
        for column in view.columns:
            if column.startswith("p "):
                view[column] = view[column].map(_p)
        for column in ("auc video", "auc static", "z or t"):
            view[column] = view[column].map(_fmt)
        view["paired"] = view["paired"].map({True: "paired", False: "UNPAIRED (different patients)"})
        lines += ["## Video vs static models (DeLong; Holm-corrected across pairs per split; exact McNemar at "
                  "P >= 0.5)",
                  "", _markdown_table(view), ""]
    if t3 is not None:
        view = pd.DataFrame({
            "rater": t3["rater"],
            "AUC (95% CI)": [_auc_cell(a, lo, hi) for a, lo, hi in zip(t3["auc"], t3["auc_ci_low"], t3["auc_ci_high"])],
            **{name: [f"{100 * v:.1f}% ({c})" for v, c in zip(t3[key], t3[f"{key}_counts"])]
               for key, name in (("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
                                 ("specificity", "specificity"))},
            "p DeLong vs model": t3["p_delong_vs_model"].map(_p),
            "p McNemar vs model": t3["p_mcnemar_vs_model"].map(_p),
        })
        lines += [f"## Table 3. {best_video.name} vs sonographers ({reader_split})", "", _markdown_table(view), ""]
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    lines += ["## Figures", ""]
    for file in files:
        if file.suffix == ".png":
            lines += [f"![{file.stem}]({file.relative_to(out).as_posix()})", ""]
    lines += ["## Provenance", ""]
    for run in runs:
        p = run.provenance
        tested = (f"; {run.summary['num_folds']}-fold cross-validation, {run.summary['selection']}"
                  if "num_folds" in run.summary else "")  # whose test predictions the tables show
        lines.append(f"- **{run.name}** ({run.model}): alnvid {p.get('alnvid')}, commit {p.get('git_commit')}, "
                     f"seed {p.get('seed')}, manifest sha256 {str(p.get('manifest_sha256'))[:12]}, torch "
                     f"{p.get('torch')}, CUDA {p.get('cuda')}, GPU {p.get('gpu')}{_cpu(p)}, created {p.get('created_utc')}"
                     f"{tested}")
    return "\n".join(lines) + "\n"


def _cpu(provenance: dict) -> str:
    """The CPU part of a run's provenance line: its name, vector instructions and threads; nothing for runs
    recorded before provenance.json held them."""
    if not provenance.get("cpu_capability"):
        return ""
    return f", CPU {provenance.get('cpu')} ({provenance['cpu_capability']}, {provenance.get('threads')} threads)"


def _html(markdown: str, out: Path) -> str:
    """A minimal Markdown-to-HTML rendering (headings, tables, images embedded as base64, paragraphs)."""
    body, table = [], []

    def flush_table() -> None:
        if table:
            rows = [r.strip("|").split(" | ") for r in table if not set(r) <= set("|-")]
            head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>"
                            for r in rows[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            data = base64.b64encode((out / src).read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(src)}"></figure>')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:]).replace('**', '')}</li>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:3px 6px;text-align:left}th{background:#f0f0f0}img{max-width:560px;margin:4px}"
             "figure{display:inline-block;margin:0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>alnvid report</title><style>{style}"
            f"</style></head><body>{''.join(body)}</body></html>")
