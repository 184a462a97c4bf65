#!/usr/bin/env bash
# The GPU check: one short run on a CUDA machine. Writes everything to $OUT.
#   OUT=/tmp/gpu ASCAN_DATA=<folder with cifar10.npz> bash benchmarks/gpu_check.sh [stage ...]
# Stages (default: tests search timm; each under its own time cap, so one that hangs costs
# only its share):
#   tests   the suite's CUDA-marked tests (pytest -m cuda)
#   search  a real search of the paper's ten layouts on the GPU: grid sampler, the inline
#           executor, proxy training on CUDA (the default recipe on 4,000 images, as a
#           data subset is what travels), latency at fp16, batch 16 (the paper's setting),
#           refinement; then its findings report. Copies trials.csv, the dashboard and
#           findings.{md,html} to $OUT.
#   timm    our profiler beside timm's benchmark loop on ascan_tiny and MaxViT-T (fp16, b16)
#   zoo     zoo_vs_timm on CUDA: fp16, batch 16 and 64, eager, then torch.compile at b16
#   proxy   benchmarks/gpu_check.py: proxy trainings and one profiling window on CUDA
set -uo pipefail
OUT=${OUT:-/tmp/ascan-gpu}; mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
stages=("$@"); [ ${#stages[@]} -eq 0 ] && stages=(tests search timm)
study=/tmp/ascan-gpu-results
for stage in "${stages[@]}"; do
  echo "== $stage ($(date +%T))"
  case $stage in
    tests) timeout 90 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/tests.log" ;;
    search)
      start=$SECONDS
      timeout 150 python3 run_search.py space=paper search.sampler=grid \
        executor=inline proxy.device=cuda proxy.train_size=4000 proxy.val_size=1000 \
        profile.device=cuda profile.dtype=float16 profile.batch_size=16 profile.max_time_s=15 \
        refine.trainings=8 refine.max_replicates=3 results_dir=$study 2>&1 | tee "$OUT/search.log"
      echo "search wall $((SECONDS - start)) s" | tee -a "$OUT/search.log"
      folder=$(ls -d $study/paper-* | head -1)
      timeout 30 python3 -m search.findings "$folder" 2>&1 | tee -a "$OUT/search.log"
      for f in trials.csv dashboard.html findings.md findings.html; do cp "$folder/$f" "$OUT/" || true; done ;;
    timm) timeout 60 python3 benchmarks/profiler_vs_timm.py --device cuda --dtype float16 --batch-size 16 \
            --channels-last --rounds 3 --models ascan_tiny maxvit_tiny_tf_224 2>&1 | tee "$OUT/timm.log" ;;
    zoo)
      python3 benchmarks/zoo_vs_timm.py --device cuda --cuda-compile off --rounds 3 --csv "$OUT/eager.csv" | tee "$OUT/eager.log"
      python3 benchmarks/zoo_vs_timm.py --device cuda --cuda-compile on --cuda-batches 16 --rounds 3 \
        --models ascan_tiny maxvit_tiny_tf_224 coatnet_0_rw_224 --csv "$OUT/compile.csv" | tee "$OUT/compile.log" ;;
    proxy) OUT="$OUT" python3 benchmarks/gpu_check.py | tee "$OUT/gpu_check.log" ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
echo "== done ($(date +%T))"
