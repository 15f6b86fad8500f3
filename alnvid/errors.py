"""User-facing errors: one message that names the file, what is wrong and what to do."""
from __future__ import annotations

from pathlib import Path


class AlnvidError(Exception):
    """An error caused by the user's input or environment, shown without a traceback by the CLI."""

    def __init__(self, problem: str, *, path: str | Path | None = None, fix: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f"{self.path}: " if self.path else ""
        todo = f"\n  What to do: {self.fix}" if self.fix else ""
        return f"{where}{self.problem}{todo}"


class InputFileError(AlnvidError):
    """A video, image or DICOM file that is missing, unreadable or not what it claims to be."""


class ManifestError(AlnvidError):
    """A cohort manifest with one or more problems; `problems` lists every one of them."""

    def __init__(self, problems: list[str], *, path: str | Path | None = None):
        self.problems = list(problems)
        listed = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the manifest:\n{listed}",
            path=path,
            fix="correct the manifest (or the files it points to) and run `alnvid cohort check` again.",
        )


class StatsInputError(AlnvidError):
    """Scores or labels that a statistic cannot be computed on (NaN, one class, mismatched lengths)."""


class AlnvidWarning(UserWarning):
    """Something worth the user's attention that does not stop the run (e.g. a loop shorter than the clip)."""
