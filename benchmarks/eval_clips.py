"""Per-patient AUC of a trained video model scored with 1 and with K evaluation clips per video (`--eval-clips`).

Usage: python benchmarks/eval_clips.py [RUN] [--clips 1 3 5]
RUN is a cross-validation folder (every fold's validation patients are rescored: out-of-fold AUC) or a fit run
folder (validation and test splits). Without arguments it uses `make demo`'s TIN cross-validation (runs/demo).
Each model keeps the epoch its run selected; only the evaluation changes. AUCs come with 95% DeLong CIs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from alnvid.config import RunConfig
from alnvid.data.datamodule import development_split
from alnvid.data.manifest import load_manifest
from alnvid.inference import BatchInputs, patient_predictions, predict_inputs
from alnvid.models.trained import load_trained
from alnvid.stats import delong_ci

DEMO_RUN = Path("runs/demo/runs/tin-cv")


def score_run(folder: Path, clips: int) -> dict[str, pd.DataFrame]:
    """Per-patient predictions of a fit run's validation and test splits with `clips` evaluation clips."""
    config = RunConfig.load(folder / "config.yaml")
    manifest = load_manifest(config.data.manifest)
    _, val_rows = development_split(manifest, config.data)
    model = load_trained(folder / "checkpoints" / "best.ckpt", eval_clips=clips)
    splits = {"val": val_rows, **{split: manifest.rows(split) for split in manifest.test_splits}}
    return {split: patient_predictions(predict_inputs(model, BatchInputs.from_manifest_rows(rows))[0])
            for split, rows in splits.items() if len(rows)}


def score(folder: Path, clips: int) -> dict[str, pd.DataFrame]:
    """A fit run's splits, or a cross-validation's pooled out-of-fold validation predictions ('oof')."""
    if not (folder / "cv_summary.json").is_file():
        return score_run(folder, clips)
    summary = json.loads((folder / "cv_summary.json").read_text())
    folds = [score_run(folder / f"fold_{k}", clips)["val"] for k in summary["folds_done"]]
    return {"oof": pd.concat(folds, ignore_index=True)}


def describe(predictions: pd.DataFrame) -> str:
    labels, probs = predictions["label"].astype(int).to_numpy(), predictions["prob"].to_numpy()
    if len(set(labels)) < 2:
        return f"n {len(labels)}: one class only, no AUC"
    ci = delong_ci(labels, probs)
    return f"AUC {ci.auc:.3f} (95% CI {ci.ci_low:.3f}-{ci.ci_high:.3f}), n {len(labels)} ({labels.sum()} positive)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path)
    parser.add_argument("--clips", type=int, nargs="+", default=[1, 3, 5])
    args = parser.parse_args()
    if args.run is None:
        if not (DEMO_RUN / "cv_summary.json").is_file():
            print(f"no run given and no {DEMO_RUN}: run `make demo` first, or give a run folder")
            return
        args.run = DEMO_RUN
    for clips in args.clips:
        start = time.perf_counter()
        scored = score(args.run, clips)
        seconds = time.perf_counter() - start
        for split, predictions in scored.items():
            print(f"eval clips {clips}: {split:8s} {describe(predictions)}  [{seconds:.0f} s to score]", flush=True)


if __name__ == "__main__":
    main()
