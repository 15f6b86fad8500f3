"""`predict` and batch `explain`: use a trained run on new files, preprocessed exactly as at evaluation in training;
`predict` gives one row per video and one per patient (mean over the patient's videos, as `fit` and `cv` do).

Every input is processed on its own. With ``skip_errors`` a bad file is listed (row, patient, neutral file id,
reason) and the others go on; without it the first bad file stops the batch with a message naming its row and
patient. Identifiers never come from file names: a bare file is known by ``file_<sha8>`` of its content.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pandas as pd

from alnvid.data.cache import PreprocessCache
from alnvid.data.crop import Box
from alnvid.data.manifest import load_file_list
from alnvid.errors import AlnvidError
from alnvid.explain import Explanation, explain_file
from alnvid.io import content_hash
from alnvid.models.trained import ModelEnsemble, TrainedModel, model_input, predict_file
from alnvid.stats.predictions import patient_level
from alnvid.utils import atomic_write_csv

ERROR_COLUMNS = ("row", "patient_id", "file", "reason")
PREDICTION_COLUMNS = ("row", "patient_id", "label", "prob")
INDEX_COLUMNS = ("row", "patient_id", "name", "prob", "keyframe", "time_s", "heat_box", "files")
Result = TypeVar("Result")


@dataclass(frozen=True)
class BatchInputs:
    """The inputs of one batch: `table` has row, patient_id, path[, label, crop_box, still_path]; `row_name` says
    what `row` counts: CSV "line"s (header = line 1) or "input"s (position among the files given, from 1)."""

    table: pd.DataFrame
    row_name: str

    @classmethod
    def from_csv(cls, path: str | Path, *, check_files: bool = True) -> BatchInputs:
        """A CSV of cases (patient_id, path, ...); missing files are listed at once unless `check_files` is off."""
        table = load_file_list(path, check_files=check_files)
        return cls(table.rename(columns={"line": "row"}), "line")

    @classmethod
    def from_manifest_rows(cls, table: pd.DataFrame) -> BatchInputs:
        return cls(table.rename(columns={"line": "row"}).reset_index(drop=True), "line")

    @classmethod
    def from_files(cls, paths: Sequence[str | Path]) -> BatchInputs:
        """Bare files: patient ids are neutral content ids, never the file names (which often carry identity)."""
        return cls(pd.DataFrame({"row": range(1, len(paths) + 1), "patient_id": [file_id(p) for p in paths],
                                 "path": [str(p) for p in paths]}), "input")

    def __len__(self) -> int:
        return len(self.table)


@dataclass
class BatchResult:
    """What a batch produced: `results` of the rows in `done` (in input order), and the skipped ones (errors,
    ERROR_COLUMNS)."""

    results: list
    done: pd.DataFrame
    errors: pd.DataFrame


def file_id(path: str | Path) -> str:
    """``file_<first 8 hex digits of the SHA-256>`` of a file's bytes (as `explain` names its outputs), or "" when
    the file cannot be read: an id that does not come from the file name."""
    return f"file_{content_hash(path)[:8]}" if Path(path).is_file() else ""


def run_batch(inputs: BatchInputs, work: Callable[[pd.Series], Result], *, skip_errors: bool = False,
              progress: Callable[[int, int, str], None] | None = None) -> BatchResult:
    """Apply `work` to every row of `inputs` on its own. A bad file (an AlnvidError) is recorded with
    `skip_errors`, else it stops the batch with the row and patient named; any other error is a bug and stops."""
    results, done_rows, errors = [], [], []
    for done, (label, row) in enumerate(inputs.table.iterrows(), 1):
        try:
            results.append(work(row))
            done_rows.append(label)
        except AlnvidError as exc:
            where = f"{inputs.row_name} {row['row']}" + (f" (patient {row['patient_id']})" if row["patient_id"] else "")
            if not skip_errors:
                fix = (exc.fix + " " if exc.fix else "") + "Nothing was written; to go on without this file, " \
                    "pass --skip-errors (skipped files are listed in an errors CSV)."
                raise AlnvidError(f"{where}: {exc.problem}", path=exc.path, fix=fix) from None
            errors.append({"row": int(row["row"]), "patient_id": row["patient_id"],
                           "file": file_id(exc.path or row["path"]), "reason": exc.problem})
        if progress:
            progress(done, len(inputs), str(row["patient_id"]))
    return BatchResult(results, inputs.table.loc[done_rows], pd.DataFrame(errors, columns=list(ERROR_COLUMNS)))


def predict_inputs(model: TrainedModel | ModelEnsemble, inputs: BatchInputs, *, skip_errors: bool = False,
                   progress: Callable[[int, int, str], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """P(metastasis) of every input: predictions (PREDICTION_COLUMNS; label empty for new cases) and errors."""
    cache = PreprocessCache.from_config(model.config.data)

    def predict_row(row: pd.Series) -> dict:
        path, box = model_input(model, row)
        prob = predict_file(model, path, box=box, cache=cache).prob
        return {"row": int(row["row"]), "patient_id": row["patient_id"], "label": row.get("label", ""), "prob": prob}

    batch = run_batch(inputs, predict_row, skip_errors=skip_errors, progress=progress)
    return pd.DataFrame(batch.results, columns=list(PREDICTION_COLUMNS)), batch.errors


def explain_inputs(model: TrainedModel | ModelEnsemble, inputs: BatchInputs, out: str | Path, *,
                   skip_errors: bool = False, progress: Callable[[int, int, str], None] | None = None,
                   **explain_options) -> tuple[list[Explanation], pd.DataFrame, pd.DataFrame]:
    """Grad-CAM artefacts of every input into `out` (see alnvid.explain.explain_file; `explain_options` go there).

    Artefacts are made in a hidden folder beside `out` and moved in only once the batch is through, so a batch
    stopped by a bad file (or Ctrl-C) leaves nothing behind. Returns the explanations (their `files` in `out`),
    the index (INDEX_COLUMNS: each row's artefacts) and the errors; both tables are also written to `out` as
    index.csv and, with `skip_errors`, errors.csv.
    """
    out = Path(out)
    cache = PreprocessCache.from_config(model.config.data)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        def explain_row(row: pd.Series) -> Explanation:
            return explain_file(model, row["path"], staging, box=Box.optional(row.get("crop_box", "")), cache=cache,
                                **explain_options)

        batch = run_batch(inputs, explain_row, skip_errors=skip_errors, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
        for file in staging.iterdir():
            os.replace(file, out / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    index = []
    for (_, row), result in zip(batch.done.iterrows(), batch.results):
        result.files = {kind: out / path.name for kind, path in result.files.items()}
        key = result.keyframe
        index.append({"row": int(row["row"]), "patient_id": row["patient_id"], "name": result.name,
                      "prob": result.prob, "keyframe": key.frame_index if key else None,
                      "time_s": key.time_s if key else None, "heat_box": str(result.heat_box or ""),
                      "files": " ".join(path.name for path in result.files.values())})
    index = pd.DataFrame(index, columns=list(INDEX_COLUMNS))
    atomic_write_csv(index, out / "index.csv")
    if skip_errors:
        atomic_write_csv(batch.errors, out / "errors.csv")
    return batch.results, index, batch.errors


def patient_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per patient of a `predict_inputs` result: patient_id, label, prob (mean over the patient's videos,
    as `fit` does; a patient whose videos carry different labels keeps one row per video, `<id>#<row>`) and
    n_videos. This is the table `alnvid stats` takes."""
    rows = predictions.assign(patient_id=predictions["patient_id"].astype(str), line=range(len(predictions)))
    table = patient_level(rows)
    counts = rows.groupby("patient_id").size()
    table["n_videos"] = table["patient_id"].map(counts).fillna(1).astype(int)
    return table
