"""`alnvid demo`: the whole protocol on the built-in demo cohort."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alnvid.cli._common import console, progress_bar, user_errors
from alnvid.cli.stats import _p
from alnvid.cli.train import describe_runtime


@user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the cohort, runs, report and Grad-CAM."),
    seed: int = typer.Option(0, "--seed", help="Seed of the cohort, the folds and the training: another seed is "
                             "an independent replication."),
    settings: Optional[str] = typer.Option(None, "--settings", help="cpu (about 7 min on 2 cores with bf16, 12 "
                                           "without), gpu (minutes on one GPU, bf16) or study (the study's T 16, "
                                           "224 px, 300 epochs, 5 folds: about 2 hours on one GPU). Default: gpu "
                                           "with a GPU, else cpu."),
    study_settings: bool = typer.Option(False, "--study-settings", help="Same as --settings study."),
    patients: Optional[int] = typer.Option(None, "--patients", help="Demo cohort size. Default: the settings' "
                                           "(168 cpu, 160 gpu and study). Each test split holds a quarter of the "
                                           "cpu cohort, 15 % of the others."),
    folds: Optional[int] = typer.Option(None, "--folds", help="Cross-validation folds. Default: the settings' "
                                        "(3 cpu, 5 gpu and study)."),
) -> None:
    """Make the demo cohort, cross-validate TIN and ResNet50, compare them (per test split and pooled), write the
    report and explain a video. Rerunning the same command resumes: finished folds and steps are kept."""
    from alnvid.errors import AlnvidError
    from alnvid.protocol import DEMO_SETTINGS, default_settings, expected_duration, run_protocol

    if study_settings:
        if settings not in (None, "study"):
            raise AlnvidError(f"--study-settings contradicts --settings {settings}", fix="give one of the two.")
        settings = "study"
    settings = settings or default_settings()
    if settings not in DEMO_SETTINGS:
        raise AlnvidError(f"unknown --settings {settings!r}", fix=f"use one of: {', '.join(DEMO_SETTINGS)}.")
    console.print(expected_duration(settings), highlight=False)
    with progress_bar("Caching videos") as update:
        result = run_protocol(out, settings=settings, seed=seed, patients=patients, folds=folds,
                              announce=lambda message: console.rule(f"[bold]{message}"), progress=update)
    console.print(f"[bold green]Done[/] with {result.settings}.", highlight=False)
    for model, cv in result.cv.items():
        tested = "fold ensemble" if cv.test_model == "ensemble" else f"best fold {cv.best_fold}"
        aucs = ", ".join(f"{split} {auc:.3f}" for split, auc in cv.reported_auc.items())
        console.print(f"  {model}: {tested}, test AUC {aucs} (ran on {describe_runtime(cv.runtime)})")
    for pair in result.comparisons:
        d = pair.comparison.delong
        console.print(f"  {pair.split} ({pair.comparison.n_common} patients): {pair.run_a} AUC {d.auc1:.3f} vs "
                      f"{pair.run_b} {d.auc2:.3f}, DeLong {_p(d.p_value)} two-sided, {_p(d.p_greater)} one-sided "
                      f"({pair.run_a} better)", highlight=False)
    console.print(f"  Report: {result.report}")
    if result.explanation:
        console.print(f"  Grad-CAM: {result.explanation.parent}")
