"""Does Grad-CAM point at the demo's known truth? Keyframe and pointing hits of the TIN model on every test patient.

Usage: python benchmarks/demo_validity.py [DEMO_FOLDER] [--seed 0] [--multi-clip] [--oof] [--json]
DEMO_FOLDER defaults to runs/demo (`make demo`); if it holds no finished demo, the demo is run into it first
(`alnvid demo --out DEMO_FOLDER --seed SEED`). Each test split is explained as a user would, with
`alnvid explain --manifest … --split … -c runs/tin-cv`, i.e. by the run's test model (the fold ensemble in the
demo recipes: the mean of the fold models' heatmaps), and scored against the cohort's demo_truth.csv, matching
each explanation to its patient by the file's sha256:
- keyframe hit: the keyframe (a loop frame index) lies in [node_first_frame, node_last_frame];
- pointing hit: the hot box (heat >= 0.5 on the keyframe, original pixels) overlaps node_box;
both on the truly positive test patients, and the AUC of the explained probabilities per split.
Goal: keyframe hit >= 80 %, pointing hit >= 70 %.
--oof scores the out-of-fold training patients instead, each explained by the fold model that did not train on
it: the set on which alnvid's Grad-CAM choices (finer layer, per-clip weights, hot-heat keyframes) were made,
so that the test patients stay untouched by them.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from alnvid.data.demo import TRUTH_NAME
from alnvid.io import content_hash
from alnvid.protocol import run_protocol, score_explanations, summarise_validity

GOALS = {"keyframe_hit_rate": 0.8, "pointing_hit_rate": 0.7}
ALNVID = [sys.executable, "-m", "alnvid"]
"""The `alnvid` command of this interpreter, as a user runs it."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", nargs="?", default="runs/demo", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the demo to run if DEMO_FOLDER holds none.")
    parser.add_argument("--multi-clip", action="store_true", help="Explain every frame of the loop (slower).")
    parser.add_argument("--oof", action="store_true", help="Score the out-of-fold training patients with their "
                        "fold's model instead of the test patients with the run's test model.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    summary_file = args.demo / "runs" / "tin-cv" / "cv_summary.json"
    if not summary_file.is_file():
        print(f"no finished demo in {args.demo}: running it (seed {args.seed})", file=sys.stderr)
        run_protocol(args.demo, seed=args.seed, announce=lambda message: print(message, file=sys.stderr))
    cv = args.demo / "runs" / "tin-cv"
    test_model = json.loads(summary_file.read_text()).get("test_model", "best_fold")
    manifest = args.demo / "cohort" / "manifest.csv"
    cohort = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    sha_to_patient = {content_hash(manifest.parent / path): patient
                      for patient, path in zip(cohort["patient_id"], cohort["path"])}
    explained = []
    with tempfile.TemporaryDirectory() as out:
        if args.oof:  # each fold's validation patients, as split test_fold_<k> (a manifest knows test_* splits)
            folds = pd.read_csv(cv / "oof_predictions.csv", dtype={"patient_id": str}).set_index("patient_id")["fold"]
            rows = cohort[cohort["patient_id"].isin(folds.index)].copy()
            rows["split"] = [f"test_fold_{folds[p]}" for p in rows["patient_id"]]
            rows["path"] = [str(manifest.parent / p) for p in rows["path"]]
            rows["still_path"] = [str(manifest.parent / p) if p else "" for p in rows["still_path"]]
            jobs_manifest = Path(out) / "oof_manifest.csv"
            rows.to_csv(jobs_manifest, index=False)
            jobs = [(f"fold_{k}", f"test_fold_{k}", cv / f"fold_{k}" / "checkpoints" / "best.ckpt")
                    for k in sorted(set(folds))]
        else:
            jobs_manifest = manifest
            tests = sorted(s for s in cohort["split"].unique() if s.startswith("test"))
            jobs = [(split, split, cv) for split in tests]  # the run folder: its test model
        for split, manifest_split, model in jobs:
            command = [*ALNVID, "explain", "--manifest", str(jobs_manifest), "--split", manifest_split,
                       "-c", str(model), "--out", out, "--no-gif", "--no-mp4", "--json",
                       *(["--multi-clip"] if args.multi_clip else [])]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"alnvid explain failed on {split}:\n{done.stderr or done.stdout}")
            explained += [{**item, "split": split} for item in json.loads(done.stdout)]
    truth = pd.read_csv(manifest.parent / TRUTH_NAME, dtype={"patient_id": str})
    scored = score_explanations(truth, sha_to_patient, explained)
    table = summarise_validity(scored)
    if args.json:
        print(json.dumps({"demo": str(args.demo), "models": "out_of_fold" if args.oof else test_model,
                          "goals": GOALS, "splits": table.to_dict(orient="records")}, indent=2, default=float))
        return
    models = (f"each fold's model of {cv} on its out-of-fold patients" if args.oof
              else f"{cv}'s test model ({test_model.replace('_', ' ')})")
    print(f"Grad-CAM of {models} against {manifest.parent / TRUTH_NAME}"
          f"{' (multi-clip)' if args.multi_clip else ''}")
    for row in table.itertuples():
        print(f"{row.split:8s} {row.patients:3d} patients, AUC {row.auc:.3f}; on {row.positives} positives: "
              f"keyframe hit {row.keyframe_hits}/{row.positives} ({100 * row.keyframe_hit_rate:.0f} %), "
              f"pointing hit {row.pointing_hits}/{row.positives} ({100 * row.pointing_hit_rate:.0f} %)")
    pooled = table.iloc[-1]
    met = all(pooled[key] >= goal for key, goal in GOALS.items())
    print(f"goals (keyframe >= 80 %, pointing >= 70 % on the pooled positives): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
