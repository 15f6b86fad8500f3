"""`predict`: use a trained run on new files, preprocessed exactly as at evaluation in training."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from alnvid.data.cache import PreprocessCache
from alnvid.models.trained import TrainedModel, model_input, predict_file


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
