"""`alnvid demo`: the whole protocol on the built-in demo cohort."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alnvid.cli._common import console, progress_bar, user_errors


@user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the cohort, runs, report and Grad-CAM."),
    patients: int = typer.Option(60, "--patients", help="Demo cohort size."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds."),
    fast: Optional[bool] = typer.Option(None, "--fast/--full", help="Tiny CPU settings, or the study's settings. "
                                        "Default: fast without a GPU, full with one."),
) -> None:
    """Make the demo cohort, cross-validate TIN and ResNet50, compare them, write the report, explain a video.
    Rerunning resumes: finished folds and steps are kept."""
    from alnvid.protocol import run_protocol

    with progress_bar("Caching videos") as update:
        result = run_protocol(out, fast_settings=fast, patients=patients, folds=folds,
                              announce=lambda message: console.rule(f"[bold]{message}"), progress=update)
    console.print(f"[bold green]Done[/] with {result.settings}.")
    for model, cv in result.cv.items():
        aucs = ", ".join(f"{split} {auc:.3f}" for split, auc in cv.test_auc.items())
        console.print(f"  {model}: best fold {cv.best_fold}, test AUC {aucs}")
    console.print(f"  Report: {result.report}")
    if result.explanation:
        console.print(f"  Grad-CAM: {result.explanation.parent}")
