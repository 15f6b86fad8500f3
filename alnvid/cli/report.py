"""`alnvid report`: Tables 1-3, comparisons and figures as Markdown, HTML and CSV."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alnvid.cli._common import console, print_json, user_errors


@user_errors
def report(
    runs: Path = typer.Argument(..., help="Folder holding finished run folders (from `alnvid cv` or `alnvid fit`)."),
    out: Path = typer.Option(Path("report"), "--out", help="Where report.md, report.html, tables/ and figures/ go."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Cohort manifest for Table 1 and the readers "
                                            "(default: the one the runs were trained on)."),
    reader_split: str = typer.Option("test_b", "--reader-split", help="Split on which the sonographers read."),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples for the paired bootstrap tests."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    json_output: bool = typer.Option(False, "--json", help="Print the written files as JSON."),
) -> None:
    """Write a report a co-author can read offline: cohort table, performance with CIs, video vs static and
    model vs sonographers, ROC/PR/calibration/training figures, provenance."""
    from alnvid.report import build_report

    result = build_report(runs, out, manifest=manifest, reader_split=reader_split, n_boot=n_boot, seed=seed)
    if json_output:
        print_json({"out": str(result.out), "files": [str(f) for f in result.files]})
        return
    console.print(f"[bold green]Report written:[/] {result.out / 'report.html'} (and report.md, "
                  f"{sum(f.suffix == '.png' for f in result.files)} figures, "
                  f"{sum(f.suffix == '.csv' for f in result.files)} CSV tables)")
