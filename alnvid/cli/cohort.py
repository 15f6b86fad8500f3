"""`alnvid cohort check` and `alnvid cohort import`/`import-pocus`: validate and convert cohort manifests."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.table import Table

from alnvid.cli._common import console, print_json, user_errors
from alnvid.errors import AlnvidError

app = typer.Typer(help="Validate a cohort manifest, or convert another table into one.", no_args_is_help=True)


@app.command()
@user_errors
def check(
    manifest: Path = typer.Argument(..., help="Cohort manifest CSV."),
    json_output: bool = typer.Option(False, "--json", help="Print counts and problems as JSON."),
    files: bool = typer.Option(True, "--files/--no-files", help="Check that every file exists and is readable."),
    folds: Optional[int] = typer.Option(None, "--folds", help="Also check that the train/val rows allow this many "
                                        "cross-validation folds (as `alnvid cv --folds`)."),
    allow_modality: Optional[list[str]] = typer.Option(None, "--allow-modality", help="Accept DICOMs of this "
                                                        "modality (e.g. CT); default ultrasound (US) only."),
) -> None:
    """Count videos and patients per split, site and label, each reader's sensitivity and specificity (95% exact
    CIs, per patient), and list every problem. Exits 2 on problems, as every command does on bad input."""
    from alnvid.compare import reader_accuracy
    from alnvid.data.manifest import check_manifest

    result = check_manifest(manifest, check_files=files, folds=folds, allow_modalities=allow_modality or [])
    counts = result.counts()
    splits = split_counts(counts)
    readers = reader_accuracy(result.table) if result.table is not None else []
    if json_output:
        print_json({"manifest": str(manifest), "ok": result.ok, "problems": result.problems,
                    "warnings": result.warnings, "counts": counts.to_dict(orient="records"),
                    "splits": splits.to_dict(orient="records"), "readers": [r.to_dict() for r in readers]})
    else:
        table = Table("split", "site", "label", "videos", "patients", title=f"Cohort {manifest}")
        for row in counts.itertuples():
            label = {0: "0 (no metastasis)", 1: "1 (metastasis)"}.get(row.label, str(row.label))
            table.add_row(row.split, str(row.site) or "-", label, str(row.videos), str(row.patients))
        console.print(table)
        per_split = Table("split", "videos", "patients", "with metastasis", "without", title="Per split")
        for row in splits.itertuples():
            per_split.add_row(row.split, str(row.videos), str(row.patients), str(row.positive), str(row.negative))
        console.print(per_split)
        if readers:
            calls = Table("reader", "split", "sensitivity (95% CI)", "specificity (95% CI)",
                          title="Readers against the labels, per patient (exact Clopper-Pearson CIs)")
            for r in readers:
                calls.add_row(r.reader, r.split, _proportion(r.metrics.sensitivity), _proportion(r.metrics.specificity))
            console.print(calls)
        for warning in result.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        for problem in result.problems:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
        console.print("[bold green]No problems found.[/]" if result.ok else
                      f"[bold red]{len(result.problems)} problem(s).[/] Fix them before training.")
    if not result.ok:
        raise typer.Exit(2)


def split_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """Videos and patients per split, and patients with and without metastasis, from `ManifestCheck.counts()`."""
    by_label = counts.pivot_table(index="split", columns="label", values="patients", aggfunc="sum", fill_value=0,
                                  sort=False)
    totals = counts.groupby("split", sort=False)[["videos", "patients"]].sum()
    return totals.assign(positive=by_label.get(1, 0), negative=by_label.get(0, 0)).reset_index()


def _proportion(metric) -> str:
    if not metric.denominator:
        return "–"
    return f"{100 * metric.value:.1f}% ({metric.counts}) [{100 * metric.ci_low:.1f}–{100 * metric.ci_high:.1f}]"


def _mapping(columns: list[str]) -> dict[str, str]:
    mapping = {}
    for item in columns:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise AlnvidError(f"--column '{item}' must look like ours=theirs, e.g. path=file")
        mapping[ours.strip()] = theirs.strip()
    return mapping


IMPORT_OPTIONS = {
    "test_fraction": typer.Option(0.0, "--test-fraction", help="Share of patients held out as test_a "
                                  "(grouped by patient, stratified by label)."),
    "external_site": typer.Option(None, "--external-site", help="Site whose patients form the external test_b."),
    "seed": typer.Option(0, "--seed", help="Seed of the test hold-out."),
}


@app.command("import")
@user_errors
def import_table(
    source: Path = typer.Argument(..., help="Your table (CSV)."),
    destination: Path = typer.Argument(..., help="The alnvid manifest to write."),
    column: list[str] = typer.Option([], "--column", help="ours=theirs, e.g. --column path=file --column "
                                     "site=hospital (patient_id, path, label are needed)."),
    test_fraction: float = IMPORT_OPTIONS["test_fraction"],
    external_site: Optional[str] = IMPORT_OPTIONS["external_site"],
    seed: int = IMPORT_OPTIONS["seed"],
) -> None:
    """Convert a table with other column names into an alnvid manifest."""
    mapping = {name: name for name in ("patient_id", "path", "label")} | _mapping(column)
    _import(source, destination, mapping, test_fraction, external_site, seed)


@app.command("import-pocus")
@user_errors
def import_pocus(
    source: Path = typer.Argument(..., help="The POCUS cohort's manifest.csv (../shared/data/pocus/manifest.csv)."),
    destination: Path = typer.Argument(..., help="The alnvid manifest to write."),
    test_fraction: float = IMPORT_OPTIONS["test_fraction"],
    external_site: Optional[str] = IMPORT_OPTIONS["external_site"],
    seed: int = IMPORT_OPTIONS["seed"],
) -> None:
    """Convert the real lung POCUS video cohort (file -> path, source_id -> site) into an alnvid manifest."""
    from alnvid.data.cohort_import import POCUS_COLUMNS

    _import(source, destination, POCUS_COLUMNS, test_fraction, external_site, seed)


@app.command("import-aln-ultra")
@user_errors
def import_aln_ultra(
    index: Path = typer.Argument(..., help="ALN-Ultra's index, data_image_selected_video.json (in its code's "
                                 "dataloader folders)."),
    root: Path = typer.Argument(..., help="The folder you unpacked the Zenodo download (record 15003119) into; "
                                "files are found by name anywhere below it."),
    destination: Path = typer.Argument(..., help="The alnvid manifest to write."),
    include_benign: bool = typer.Option(False, "--include-benign", help="Keep the patients with a benign tumour "
                                        "(biopsy 2) as label 0; their expert call, 2 (benign), becomes 0."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Leave out files not found below ROOT instead of "
                                      "stopping (a patient without its still image or any video is left out)."),
    test_fraction: float = IMPORT_OPTIONS["test_fraction"],
    seed: int = IMPORT_OPTIONS["seed"],
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Convert the public ALN-Ultra cohort (biopsy labels, the expert's calls as reader_expert, one row per video,
    the selected still image) into an alnvid manifest. Nothing is decoded; nothing is written on an error."""
    from alnvid.data.cohort_import import import_aln_ultra as run_import

    result = run_import(index, root, destination, include_benign=include_benign, skip_missing=skip_missing,
                        test_fraction=test_fraction, seed=seed)
    summary = result.summary()
    if json_output:
        print_json({"manifest": str(destination), **summary})
        return
    splits = ", ".join(f"{split}: {c['videos']} videos / {c['patients']} patients"
                       for split, c in summary["splits"].items())
    console.print(f"Wrote {destination}: {summary['patients']} patients ({summary['patients_positive']} with ALN "
                  f"metastasis, {summary['patients_negative']} without), {summary['videos']} videos ({splits}).")
    if summary["benign_left_out"]:
        console.print(f"Left out {summary['benign_left_out']} patients with a benign tumour (--include-benign "
                      "keeps them as label 0).")
    if summary["concatenated_videos"]:
        console.print(f"{summary['concatenated_videos']} patients have their concatenated video instead of clips.")
    if summary["missing_files"]:
        console.print(f"[yellow]Skipped {summary['missing_files']} missing files[/] "
                      f"({summary['patients_skipped']} patients left out).")
    console.print(f"Next: alnvid cohort check {destination}")


def _import(source: Path, destination: Path, mapping: dict[str, str], test_fraction: float,
            external_site: str | None, seed: int) -> None:
    from alnvid.data.cohort_import import import_manifest

    table = import_manifest(source, destination, mapping, test_fraction=test_fraction,
                            external_site=external_site, seed=seed)
    counts = table.groupby("split")["patient_id"].agg(["size", "nunique"])
    summary = ", ".join(f"{split}: {row['size']} videos / {row['nunique']} patients" for split, row in counts.iterrows())
    console.print(f"Wrote {destination} ({summary}). Next: alnvid cohort check {destination}")
