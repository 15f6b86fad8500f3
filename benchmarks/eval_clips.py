"""Per-patient AUC of a trained model scored with 1 and with K evaluation clips per video (`--eval-clips`), and
with and without mirrored views (`--eval-flip`).

Usage: python benchmarks/eval_clips.py [RUN] [--clips 1 3 5] [--flip]
RUN is a cross-validation folder (every fold's validation patients are rescored: out-of-fold AUC; every fold scores
the test splits: the fold ensemble's AUC per split and pooled) or a fit run folder (validation and test splits).
Without arguments it uses `make demo`'s TIN cross-validation (runs/demo). Each model keeps the epoch its run
selected; only the evaluation changes. AUCs come with 95% DeLong CIs. `--flip` scores every setting both ways.
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


def score_run(folder: Path, clips: int, flip: bool = False) -> dict[str, pd.DataFrame]:
    """Per-patient predictions of a fit run's validation and test splits with `clips` evaluation clips, mirrored
    views averaged in with `flip`."""
    config = RunConfig.load(folder / "config.yaml")
    manifest = load_manifest(config.data.manifest)
    _, val_rows = development_split(manifest, config.data)
    model = load_trained(folder / "checkpoints" / "best.ckpt", eval_clips=clips, eval_flip=flip)
    splits = {"val": val_rows, **{split: manifest.rows(split) for split in manifest.test_splits}}
    return {split: patient_predictions(predict_inputs(model, BatchInputs.from_manifest_rows(rows))[0])
            for split, rows in splits.items() if len(rows)}


def score(folder: Path, clips: int, flip: bool = False) -> dict[str, pd.DataFrame]:
    """A fit run's splits, or a cross-validation's pooled out-of-fold validation predictions ('oof') and its fold
    ensemble's test predictions (mean probability over the folds), per split and pooled."""
    if not (folder / "cv_summary.json").is_file():
        return score_run(folder, clips, flip)
    summary = json.loads((folder / "cv_summary.json").read_text())
    folds = [score_run(folder / f"fold_{k}", clips, flip) for k in summary["folds_done"]]
    scored = {"oof": pd.concat([fold["val"] for fold in folds], ignore_index=True)}
    for split in [name for name in folds[0] if name != "val"]:
        together = pd.concat([fold[split] for fold in folds])
        scored[f"ensemble {split}"] = together.groupby("patient_id", as_index=False).agg(
            label=("label", "first"), prob=("prob", "mean"))
    tests = [frame for name, frame in scored.items() if name.startswith("ensemble")]
    if len(tests) > 1:
        scored["ensemble pooled"] = pd.concat(tests, ignore_index=True)
    return scored


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
    parser.add_argument("--flip", action="store_true", help="score every setting also with mirrored views")
    args = parser.parse_args()
    if args.run is None:
        if not (DEMO_RUN / "cv_summary.json").is_file():
            print(f"no run given and no {DEMO_RUN}: run `make demo` first, or give a run folder")
            return
        args.run = DEMO_RUN
    for clips in args.clips:
        for flip in (False, True) if args.flip else (False,):
            start = time.perf_counter()
            scored = score(args.run, clips, flip)
            seconds = time.perf_counter() - start
            setting = f"eval clips {clips}{', flip' if flip else ''}"
            for split, predictions in scored.items():
                print(f"{setting}: {split:16s} {describe(predictions)}  [{seconds:.0f} s to score]", flush=True)


if __name__ == "__main__":
    main()
