"""Grad-CAM of a test set's telling cases: the most confident true positives and negatives, and every error.

Artefacts go to ``<out>/gradcam/<split>/`` under neutral names (``explain_<sha8>``), with ``index.csv`` linking
each to its manifest row (patient_id, label, probability, why it was chosen, keyframe, heat box).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd

from alnvid.config import RunConfig
from alnvid.data.cache import PreprocessCache
from alnvid.explain.core import explain_file
from alnvid.models.trained import ModelEnsemble, TrainedModel, model_input, predict_file
from alnvid.utils import atomic_write_csv

__all__ = ["GradCAMExport", "export_gradcam", "select_cases"]

INDEX_COLUMNS = ("patient_id", "label", "prob", "reason", "name", "keyframe", "time_s", "heat_box")


def select_cases(predictions: pd.DataFrame, top_n: int = 3, threshold: float = 0.5) -> pd.DataFrame:
    """Rows worth explaining, with a ``reason``: the ``top_n`` most confident correct positives and negatives
    and all errors (call P >= ``threshold`` differs from the label). Needs columns label and prob."""
    called = predictions["prob"] >= threshold
    positive = predictions["label"].astype(int) == 1
    groups = [
        predictions[called & positive].nlargest(top_n, "prob").assign(reason="confident_positive"),
        predictions[~called & ~positive].nsmallest(top_n, "prob").assign(reason="confident_negative"),
        predictions[called & ~positive].sort_values("prob", ascending=False).assign(reason="false_positive"),
        predictions[~called & positive].sort_values("prob").assign(reason="false_negative"),
    ]
    return pd.concat(groups, ignore_index=True)


def export_gradcam(
    model: TrainedModel | ModelEnsemble,
    rows: pd.DataFrame,
    out_dir: str | Path,
    *,
    top_n: int = 3,
    progress: Callable[[int, int, str], None] | None = None,
    **explain_options,
) -> pd.DataFrame:
    """Explain the telling cases among ``rows`` (patient_id, path, label[, prob][, crop_box]) into ``out_dir``.

    Without a ``prob`` column the probabilities are predicted first. ``explain_options`` go to
    :func:`explain_file` (multi_clip, gif, mp4, ...). Returns the index also written to ``out_dir/index.csv``.
    """
    out_dir = Path(out_dir)
    data = model.config.data
    cache = PreprocessCache.from_config(data)
    rows = rows.reset_index(drop=True)
    if "prob" not in rows.columns:
        probs = []
        for _, row in rows.iterrows():
            path, box = model_input(model, row)
            probs.append(predict_file(model, path, box=box, cache=cache).prob)
        rows = rows.assign(prob=probs)
    chosen = select_cases(rows, top_n)
    index = []
    for done, (_, row) in enumerate(chosen.iterrows()):
        path, box = model_input(model, row)
        result = explain_file(model, path, out_dir, box=box, cache=cache, **explain_options)
        key = result.keyframe
        index.append({"patient_id": row["patient_id"], "label": int(row["label"]), "prob": result.prob,
                      "reason": row["reason"], "name": result.name,
                      "keyframe": key.frame_index if key else None, "time_s": key.time_s if key else None,
                      "heat_box": str(result.heat_box) if result.heat_box else ""})
        if progress:
            progress(done + 1, len(chosen), row["reason"])
    table = pd.DataFrame(index, columns=list(INDEX_COLUMNS))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(table, out_dir / "index.csv")
    return table


class GradCAMExport(L.Callback):
    """After testing, writes Grad-CAM artefacts of every test split's telling cases to ``<out_dir>/<split>/``.

    Uses the probabilities the module collected in ``epoch_outputs[split]`` (one per manifest row, in the
    order of the datamodule's ``test_rows[split]``). :meth:`export` does the same for any module and split,
    e.g. the best checkpoint after `fit`.
    """

    def __init__(self, out_dir: str | Path, config: RunConfig, *, top_n: int = 3, multi_clip: bool = False,
                 gif: bool = True, mp4: bool = False):
        self.out_dir = Path(out_dir)
        self.config = config
        self.top_n = top_n
        self.options = {"multi_clip": multi_clip, "gif": gif, "mp4": mp4}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        for split, rows in datamodule.test_rows.items():
            outputs = pl_module.epoch_outputs.get(split, [])
            if len(outputs) != len(rows) or any(o[0] != str(p) for o, p in zip(outputs, rows["patient_id"])):
                continue  # predictions do not line up with the rows (e.g. a limited test run): nothing to export
            self.export(pl_module, rows.assign(prob=np.array([o[2] for o in outputs])), split)

    def export(self, module: L.LightningModule, rows: pd.DataFrame, split: str) -> pd.DataFrame:
        """Explain the telling cases of ``rows`` (manifest rows, optionally with ``prob``) of ``split``."""
        training = module.training
        module.eval()
        try:
            return self.export_model(TrainedModel(module, self.config, Path(self.config.out) / "checkpoints"),
                                     rows, split)
        finally:
            module.train(training)

    def export_model(self, model: TrainedModel | ModelEnsemble, rows: pd.DataFrame, split: str) -> pd.DataFrame:
        """As :meth:`export`, for a loaded model or an ensemble (e.g. a cross-validation's test model)."""
        return export_gradcam(model, rows, self.out_dir / split, top_n=self.top_n, **self.options)

