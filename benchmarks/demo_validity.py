"""Does Grad-CAM point at the demo's known truth? Keyframe and pointing hits of the TIN model on every test patient.

Usage: python benchmarks/demo_validity.py [DEMO_FOLDER] [--seed 0] [--multi-clip] [--json]
DEMO_FOLDER defaults to runs/demo (`make demo`); if it holds no finished demo, the demo is run into it first
(`alnvid demo --out DEMO_FOLDER --seed SEED`). Each test split is explained as a user would, with
`alnvid explain --manifest … --split …`, and scored against the cohort's demo_truth.csv, matching each
explanation to its patient by the file's sha256:
- keyframe hit: the keyframe (a loop frame index) lies in [node_first_frame, node_last_frame];
- pointing hit: the hot box (heat >= 0.5 on the keyframe, original pixels) overlaps node_box;
both on the truly positive test patients, and the AUC of the explained probabilities per split.
Goal: keyframe hit >= 80 %, pointing hit >= 70 %.
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
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    summary_file = args.demo / "runs" / "tin-cv" / "cv_summary.json"
    if not summary_file.is_file():
        print(f"no finished demo in {args.demo}: running it (seed {args.seed})", file=sys.stderr)
        run_protocol(args.demo, seed=args.seed, announce=lambda message: print(message, file=sys.stderr))
    checkpoint = args.demo / "runs" / "tin-cv" / json.loads(summary_file.read_text())["best_checkpoint"]
    manifest = args.demo / "cohort" / "manifest.csv"
    cohort = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    sha_to_patient = {content_hash(manifest.parent / path): patient
                      for patient, path in zip(cohort["patient_id"], cohort["path"])}
    explained = []
    with tempfile.TemporaryDirectory() as out:
        for split in sorted(s for s in cohort["split"].unique() if s.startswith("test")):
            command = [*ALNVID, "explain", "--manifest", str(manifest), "--split", split,
                       "-c", str(checkpoint), "--out", out, "--no-gif", "--no-mp4", "--json",
                       *(["--multi-clip"] if args.multi_clip else [])]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"alnvid explain failed on {split}:\n{done.stderr or done.stdout}")
            explained += [{**item, "split": split} for item in json.loads(done.stdout)]
    truth = pd.read_csv(manifest.parent / TRUTH_NAME, dtype={"patient_id": str})
    scored = score_explanations(truth, sha_to_patient, explained)
    table = summarise_validity(scored)
    if args.json:
        print(json.dumps({"demo": str(args.demo), "checkpoint": str(checkpoint), "goals": GOALS,
                          "splits": table.to_dict(orient="records")}, indent=2, default=float))
        return
    print(f"Grad-CAM of {checkpoint} against {manifest.parent / TRUTH_NAME}"
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
