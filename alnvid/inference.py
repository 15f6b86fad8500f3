"""`predict`: use a trained run on new files, preprocessed exactly as at evaluation in training; one row per video,
and one per patient (mean over the patient's videos, as `fit` and `cv` score them)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from alnvid.data.cache import PreprocessCache
from alnvid.models.trained import TrainedModel, model_input, predict_file
from alnvid.stats.predictions import patient_level


def predict_table(model: TrainedModel, table: pd.DataFrame, progress=None) -> pd.DataFrame:
    """Predict every row of a manifest table (patient_id, path[, label, crop_box, still_path]) into
    patient_id, path, label, prob."""
    cache = PreprocessCache.from_config(model.config.data)
    rows = []
    for done, (_, row) in enumerate(table.iterrows()):
        path, box = model_input(model, row)
        result = predict_file(model, path, box=box, cache=cache)
        rows.append({"patient_id": row["patient_id"], "path": row["path"], "label": row.get("label", ""),
                     "prob": result.prob})
        if progress:
            progress(done + 1, len(table), Path(row["path"]).name)
    return pd.DataFrame(rows)


def patient_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per patient of a `predict_table` result: patient_id, label, prob (mean over the patient's videos,
    as `fit` does; a patient whose videos carry different labels keeps one row per video, `<id>#<row>`) and
    n_videos. This is the table `alnvid stats` takes."""
    rows = predictions.assign(patient_id=predictions["patient_id"].astype(str), line=range(len(predictions)))
    table = patient_level(rows)
    counts = rows.groupby("patient_id").size()
    table["n_videos"] = table["patient_id"].map(counts).fillna(1).astype(int)
    return table
