#!/usr/bin/env bash
# The GPU check (issue #18): one short run on a CUDA machine. Writes everything to $OUT.
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
# 1. zoo_vs_timm on CUDA: fp16, batch 16 and 64, eager (all models), then torch.compile at
#    batch 16 (ascan_tiny and the two hybrids it is compared with: compiling takes minutes).
# 2. benchmarks/gpu_check.py: proxy trainings on CUDA and one profiling window (fp16, batch 16).
# Set ASCAN_DATA to a folder with cifar10.npz (a subset is enough for step 2).
set -euo pipefail
OUT=${OUT:-/tmp/ascan-gpu}; mkdir -p "$OUT"
cd "$(dirname "$0")/.."
python3 benchmarks/zoo_vs_timm.py --device cuda --cuda-compile off --rounds 3 --csv "$OUT/eager.csv" | tee "$OUT/eager.log"
python3 benchmarks/zoo_vs_timm.py --device cuda --cuda-compile on --cuda-batches 16 --rounds 3 \
  --models ascan_tiny maxvit_tiny_tf_224 coatnet_0_rw_224 --csv "$OUT/compile.csv" | tee "$OUT/compile.log"
OUT="$OUT" python3 benchmarks/gpu_check.py | tee "$OUT/gpu_check.log"
