#!/usr/bin/env bash
# One call that measures every speed goal of issue 10 on a GPU machine and prints each goal beside its figure.
#
# Goals (H100/H200, T 16, 224 px):
#   TIN >= 0.9x TSM clips/s at batch 4 and at batch 16      (benchmarks/train_throughput.py, channels_last, bf16)
#   TIN >= 150 clips/s at batch 4
#   study protocol, TIN, <= 30 min                           (benchmarks/protocol_time.py, best N of parallel folds)
#   fit epoch wall <= 1.15x the sum of its training steps    (protocol_time.py's wall/steps column; plus a real
#                                                            `alnvid fit` of 5 epochs on a demo cohort)
#   data pipeline >= 400 clips/s from the cache, 16 cores     (benchmarks/data_pipeline.py: augmentation in the
#                                                            workers vs on the GPU after transfer, the default)
#   alnvid explain of one DICOM <= 3 s, interpreter start-up excluded (benchmarks/explain_speed.py)
# About 6 to 9 minutes in all (an estimate: never run yet). Everything it prints also lands in $OUT/gpu_check.
#
# A fresh device machine has Python 3.12 and torch 2.11 (with Triton, Lightning, torchvision, pandas, ...) but
# not every package alnvid needs. Prepare once, here, in the repository root (nothing is downloaded at run time):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl pydicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle av pytorchvideo fvcore \
#       iopath parameterized yacs portalocker albumentations albucore pydantic pydantic-core annotated-types \
#       typing-inspection stringzilla simsimd
#   python3 -m pip wheel --no-deps -w .whl .               # alnvid itself (optional: the script also sets PYTHONPATH)
#   unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist   # for any wheel whose needs are unsure
#
# (Check the names against pyproject.toml's dependencies and KINDS.md's list of what the image already holds;
# keep one version of each.) Then run it with the `run` tool, carrying .whl:
#
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# The script installs the wheels into /tmp/site when .whl exists, and otherwise uses the Python it finds.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
LOG=${OUT:-/tmp}/gpu_check
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))"

echo "== 1. fused interlace equals the reference on this GPU"
$PY - <<'EOF' 2>&1 | tee "$LOG/fused.txt"
import torch
from alnvid.models.interlace import TemporalInterlace
torch.manual_seed(0)
for fmt in (torch.contiguous_format, torch.channels_last):
    layer = TemporalInterlace(64, 16).cuda()
    x = torch.randn(2 * 16, 64, 28, 28, device="cuda").contiguous(memory_format=fmt).requires_grad_()
    up = torch.randn_like(x)
    y = layer(x); gx, = torch.autograd.grad(y, x, up); gp = [p.grad for p in layer.parameters()]
    layer.fused = False
    x2 = x.detach().clone().requires_grad_(); y2 = layer(x2); gx2, = torch.autograd.grad(y2, x2, up)
    print(fmt, "max |y - ref|", (y - y2).abs().max().item(), "max |dx - ref|", (gx - gx2).abs().max().item())
EOF

echo "== 2. training throughput (goal: TIN >= 0.9x TSM at batch 4 and 16; TIN >= 150 clips/s at batch 4)"
for batch in 4 16; do
    $PY benchmarks/train_throughput.py --models tin tsm r3d_18 --channels-last --batch $batch 2>&1 \
        | tee "$LOG/throughput_b$batch.txt"
done
$PY benchmarks/train_throughput.py --models tin --channels-last --batch 4 --reference-interlace 2>&1 \
    | tee "$LOG/throughput_b4_matmul.txt"   # the matmul interlace, for the fused kernels' gain
$PY - "$LOG" <<'EOF'
import re, sys
def rates(path):
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+)\s+\d+\s+\d+\s+[\d.]+\s+([\d.]+)", open(path).read(), re.M)}
for batch in (4, 16):
    r = rates(f"{sys.argv[1]}/throughput_b{batch}.txt")
    if "tin" in r and "tsm" in r:
        print(f"GOAL batch {batch}: TIN/TSM = {r['tin'] / r['tsm']:.2f} (goal >= 0.90); TIN {r['tin']:.0f} clips/s"
              + (" (goal >= 150)" if batch == 4 else ""))
EOF

echo "== 3. study protocol projection and epoch overhead (goals: TIN <= 30 min; epoch wall <= 1.15x steps)"
$PY benchmarks/protocol_time.py --models tin tsm resnet50 --parallel 1 2 4 5 2>&1 | tee "$LOG/protocol.txt"
echo "GOAL protocol: TIN's best 'N=k min' column <= 30; every 'wall/steps' <= 1.15 (see the table above)"

echo "== 4. a real fit on a demo cohort (prints the defaults chosen for this GPU; gives explain a checkpoint)"
DEMO=/tmp/gpu_check_demo
$PY -m alnvid demo-data "$DEMO/cohort" --patients 30 --frames 48 > /dev/null
start=$SECONDS
$PY -m alnvid fit --data "$DEMO/cohort/manifest.csv" --epochs 5 --out "$DEMO/fit" --cache-dir "$DEMO/cache" \
    2>&1 | tail -6 | tee "$LOG/fit.txt"
echo "fit, 5 epochs at the study's settings, caching and start-up included: $((SECONDS - start)) s"

echo "== 5. data pipeline from the cache (goal >= 400 clips/s with 16 cores)"
$PY - <<'EOF' 2>&1 | tee "$LOG/augment_equal.txt"
import torch
from alnvid.data.gpu_augment import augment_batch, noise_grid_shape
torch.manual_seed(0)
x = torch.randint(0, 256, (4, 16, 256, 256, 3), dtype=torch.uint8)
p = {"flip": torch.tensor([True, False, True, False]), "top": torch.tensor([0, 32, 5, 17]),
     "left": torch.tensor([32, 0, 9, 3]), "elastic": torch.tensor([True, True, False, False]),
     "noise": torch.randn(4, *noise_grid_shape(256, 256))}
ref = augment_batch(x, p, 224)
out = augment_batch(x.cuda(), {k: v.cuda() for k, v in p.items()}, 224)
print("torch augmentation on CUDA vs the CPU: max |difference|", (out.cpu() - ref).abs().max().item(), "(want < 1e-5)")
EOF
timeout 240 $PY benchmarks/data_pipeline.py --manifest "$DEMO/cohort/manifest.csv" --cache-dir "$DEMO/cache" \
    --workers 8 16 2>&1 | tail -7 | tee "$LOG/data.txt"
echo "GOAL data pipeline: 'augment gpu' (the default on a GPU) at 16 workers >= 400 clips/s; 'augment cpu' is the"
echo "     albumentations path, 'frames' the workers' ceiling (uint8 frames, no augmentation)"

echo "== 6. explain one DICOM (goal <= 3 s, interpreter start-up excluded)"
DICOM=$($PY -c "from pathlib import Path; from alnvid.protocol import first_test_video; print(first_test_video(Path('$DEMO/cohort/manifest.csv')))")
timeout 180 $PY benchmarks/explain_speed.py "$DEMO/fit/checkpoints/best.ckpt" "$DICOM" --device cuda 2>&1 \
    | tail -8 | tee "$LOG/explain.txt"
