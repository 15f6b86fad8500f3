#!/usr/bin/env bash
# Five folds as five independent jobs (one GPU each), then one step that assembles them.
# With SLURM: sbatch --array=0-4 --gres=gpu:1 examples/cluster_folds.sh, then run the --collect line once.
set -euo pipefail
FOLD=${SLURM_ARRAY_TASK_ID:-${1:?give the fold number}}
alnvid cv --data cohort.csv --model tin --folds 5 --fold "$FOLD" --config examples/study.yaml --out runs/tin-cv
# afterwards, once: alnvid cv --collect runs/tin-cv && alnvid report runs/ --out report/
