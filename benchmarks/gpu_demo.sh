#!/usr/bin/env bash
# The GPU demo (issue 9, item 2), timed: `alnvid demo` with the gpu recipe for each seed given (default 0), then
# benchmarks/demo_validity.py on it. Goal: <= 10 minutes, TIN pooled test AUC >= 0.95 (bf16).
#
# A device machine has no internet: prepare the wheels as benchmarks/gpu_check.sh says, then
#   run(command="bash benchmarks/gpu_demo.sh 0", carry=[".whl"], timeout_s=600)
# Each seed's output lands in $OUT/gpu_demo: the demo's log with a clock time per line, the validity JSON, and one
# archive with every fold's summary, epochs.csv and predictions, the comparisons and the fold logs.
# `make demo` is not what runs there (it builds a venv from PyPI); `python3 -m alnvid demo` is the same command.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
export COLUMNS=${COLUMNS:-160}
LOG=${OUT:-/tmp}/gpu_demo
mkdir -p "$LOG"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; } \
    2>&1 | tee "$LOG/machine.txt"

stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%T)" "$line"; done; }

for seed in "${@:-0}"; do
    demo=/tmp/gpu_demo_seed$seed
    start=$SECONDS
    timeout "${DEMO_TIMEOUT_S:-570}" $PY -m alnvid demo --out "$demo" --seed "$seed" 2>&1 | stamp \
        | tee "$LOG/demo_seed$seed.txt"
    echo "seed $seed: alnvid demo exited $? after $((SECONDS - start)) s (cohort, caching, both models, report and" \
         "explanation included)" | tee -a "$LOG/demo_seed$seed.txt"
    start=$SECONDS
    timeout "${VALIDITY_TIMEOUT_S:-240}" $PY benchmarks/demo_validity.py "$demo" --json > "$LOG/validity_seed$seed.json"
    echo "seed $seed: demo_validity exited $? after $((SECONDS - start)) s" | tee -a "$LOG/demo_seed$seed.txt"
    (cd "$demo" && find runs report -maxdepth 4 \( -name '*.json' -o -name '*.csv' -o -name '*.log' \) -size -2M \
        | tar czf "$LOG/results_seed$seed.tar.gz" -T -) 2>/dev/null
done
