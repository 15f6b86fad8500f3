"""What every command shares: one console, error display without tracebacks, progress bars, JSON output."""
from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from alnvid.errors import AlnvidError, AlnvidWarning

console = Console()
errors = Console(stderr=True)


def user_errors(command: Callable) -> Callable:
    """Show an AlnvidError as one red message (file, problem, what to do) and exit with status 2; Ctrl-C exits
    with 130 and says how to resume; our warnings are shown as one yellow line each."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning(warnings.showwarning)
                return command(*args, **kwargs)
        except AlnvidError as error:
            errors.print(f"[bold red]Error:[/] {error.message}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print("[yellow]Interrupted.[/] Finished work is saved: rerun the same command to resume "
                         "(`alnvid fit` needs --resume).", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def _show_warning(default: Callable) -> Callable:
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, AlnvidWarning):
            errors.print(f"[yellow]Warning:[/] {escape(str(message))}", highlight=False, markup=True)
        else:
            default(message, category, filename, lineno, file, line)

    return show


@contextmanager
def progress_bar(description: str, *, enabled: bool = True) -> Iterator[Callable[[int, int, str], None]]:
    """A rich progress bar driven by calls `update(done, total, item)`; silent when not enabled."""
    if not enabled:
        yield lambda done, total, item: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[item]}"), TimeRemainingColumn(), console=errors, transient=True) as bar:
        task = bar.add_task(description, total=None, item="")

        def update(done: int, total: int, item: str) -> None:
            bar.update(task, completed=done, total=total, item=item)

        yield update


def print_json(payload: Any) -> None:
    """Machine-readable output: JSON only on stdout, NaN and infinity written as null."""
    typer.echo(json.dumps(_finite(payload), indent=2, default=str))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


CHECKPOINT_HELP = ("A run's checkpoints/best.ckpt (it carries the run's settings: it works copied on its own), or a "
                   "run folder (a cv folder gives its test model: the best fold, or every fold with --test-model "
                   "ensemble). Repeat it to average several checkpoints of one recipe.")


def load_checkpoints(given: list[Path], *, eval_clips: int | None = None, eval_flip: bool | None = None):
    """The model(s) of the --checkpoint options: files as they are, run folders as their test model's checkpoints;
    several make a `ModelEnsemble`."""
    from alnvid.models.trained import load_models
    from alnvid.runs import is_run_folder, run_checkpoints

    paths = []
    for path in map(Path, given):
        paths += run_checkpoints(path) if is_run_folder(path) else [path]
    return load_models(paths, eval_clips=eval_clips, eval_flip=eval_flip)
