"""`alnvid cv`: k-fold cross-validation with the study's best-fold rule, resumable and splittable across jobs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from alnvid.cli._common import console, print_json, progress_bar, user_errors
from alnvid.cli.train import describe_runtime, print_comparisons, training_overrides, with_training_options
from alnvid.errors import AlnvidError


@user_errors
@with_training_options
def cv(
    training: dict[str, Any],
    folds: int = typer.Option(5, "--folds", help="Number of folds (grouped by patient, stratified by label)."),
    fold: Optional[int] = typer.Option(None, "--fold", help="Run only this fold (0-based), e.g. one per GPU or "
                                       "cluster job; assemble afterwards with --collect."),
    parallel_folds: Optional[int] = typer.Option(None, "--parallel-folds", help="Folds trained at a time, each in "
                                                 "its own process on the same GPU (same results as one at a time). "
                                                 "Default: 1 on the CPU; on a GPU min(folds, 4, free GiB / 12, "
                                                 "cores / 4)."),
    collect: Optional[Path] = typer.Option(None, "--collect", help="Assemble the finished folds of this cv folder "
                                           "(no training)."),
    test_model: Optional[str] = typer.Option(None, "--test-model", help="Whose test predictions are the run's "
                                             "(compared and reported): best_fold (the fold of best validation AUC, "
                                             "the study) or ensemble (mean of every fold's model). Both are always "
                                             "written and printed. Default best_fold; with --collect, the run's."),
    out: Optional[Path] = typer.Option(None, "--out", help="CV folder: fold_<k>/ runs, out-of-fold and test "
                                       "predictions, cv_summary.json. Default runs/<model>-cv."),
    json_output: bool = typer.Option(False, "--json", help="Print the CV summary as JSON."),
) -> None:
    """Cross-validate a model; the best fold (by validation AUC) and the fold ensemble are evaluated on every test
    split. Interrupted runs resume: finished folds are never retrained."""
    from alnvid.config import resolve_config
    from alnvid.cv import collect_cv, run_cv
    from alnvid.train import is_global_zero

    if collect is not None:
        result = collect_cv(collect, test_model=test_model)
    else:
        settings = resolve_config(training["config"], fast_settings=training["fast"],
                                  overrides=training_overrides(**training, out=out, test_model=test_model))
        if not settings.data.manifest:
            raise AlnvidError("no cohort given", fix="pass --data manifest.csv.")
        if out is None:
            settings.out = f"runs/{settings.model.name}-cv"
        settings.trainer.progress = not json_output

        def announce(k: int, total: int) -> None:
            if not json_output and is_global_zero():
                console.rule(f"[bold]{settings.model.name}: fold {k + 1} of {total}"
                             + (f" (log: {settings.out}/logs/fold_{k}.log)" if (parallel_folds or 1) > 1 else ""))

        with progress_bar("Caching videos", enabled=not json_output and is_global_zero()) as update:
            result = run_cv(settings, folds, only_fold=fold, progress=update, on_fold_start=announce,
                            compare_to=training["compare_to"], parallel_folds=parallel_folds)
        if not is_global_zero():
            return  # the other processes of a multi-device run: the first one reports
        if result is None:
            console.print(f"Fold {fold} done. When every fold is done: alnvid cv --collect {settings.out}")
            return
    summary = {"out": str(result.out), "fold_val_auc": result.fold_auc, "best_fold": result.best_fold,
               "oof_auc": result.oof_auc, "oof_selection": result.selection,
               "oof_optimistic": result.selection == "best",
               "test_model": result.test_model,
               "test_auc_best_fold": result.test_auc, "test_auc_ensemble": result.ensemble_auc,
               "comparisons": result.comparisons, "runtime": result.runtime}
    if json_output:
        print_json(summary)
        return
    table = Table("fold", "validation AUC (per patient)", title=f"Cross-validation: {result.out}")
    for k, auc in result.fold_auc.items():
        table.add_row(f"{k}{' (best)' if k == result.best_fold else ''}", f"{auc:.3f}")
    console.print(table)
    console.print(f"  folds ran on {describe_runtime(result.runtime)}")
    honesty = ("[yellow]optimistic[/]: each fold kept its best epoch on these patients; --selection last gives an "
               "unbiased estimate" if result.selection == "best" else "unbiased: each fold's last epoch")
    console.print(f"  out-of-fold AUC {result.oof_auc:.3f} ({honesty})")
    mark = {"best_fold": (" (the run's)", ""), "ensemble": ("", " (the run's)")}[result.test_model]
    for split in result.test_auc:
        console.print(f"  {split}: AUC best fold {result.test_auc[split]:.3f}{mark[0]}, "
                      f"fold ensemble {result.ensemble_auc[split]:.3f}{mark[1]}")
    print_comparisons(result.comparisons)
