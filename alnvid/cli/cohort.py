"""`alnvid cohort check` and `alnvid cohort import`/`import-pocus`: validate and convert cohort manifests."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

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
) -> None:
    """Count videos and patients per split, site and label, and list every problem. Exits 1 on problems."""
    from alnvid.data.manifest import check_manifest

    result = check_manifest(manifest, check_files=files)
    counts = result.counts()
    if json_output:
        print_json({"manifest": str(manifest), "ok": result.ok, "problems": result.problems,
                    "warnings": result.warnings, "counts": counts.to_dict(orient="records")})
    else:
        table = Table("split", "site", "label", "videos", "patients", title=f"Cohort {manifest}")
        for row in counts.itertuples():
            label = {0: "0 (no metastasis)", 1: "1 (metastasis)"}.get(row.label, str(row.label))
            table.add_row(row.split, str(row.site) or "-", label, str(row.videos), str(row.patients))
        console.print(table)
        for warning in result.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        for problem in result.problems:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
        console.print("[bold green]No problems found.[/]" if result.ok else
                      f"[bold red]{len(result.problems)} problem(s).[/] Fix them before training.")
    if not result.ok:
        raise typer.Exit(1)


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


def _import(source: Path, destination: Path, mapping: dict[str, str], test_fraction: float,
            external_site: str | None, seed: int) -> None:
    from alnvid.data.cohort_import import import_manifest

    table = import_manifest(source, destination, mapping, test_fraction=test_fraction,
                            external_site=external_site, seed=seed)
    counts = table.groupby("split")["patient_id"].agg(["size", "nunique"])
    summary = ", ".join(f"{split}: {row['size']} videos / {row['nunique']} patients" for split, row in counts.iterrows())
    console.print(f"Wrote {destination} ({summary}). Next: alnvid cohort check {destination}")
