#!/usr/bin/env bash
# The GPU figures BENCHMARKS.md still lacks, in one short run (about 10 minutes on one
# H100/H200; every stage has its own time limit and writes into OUT as it goes, so a run cut
# short keeps what it measured):
#   1. end to end, data included: `moma distill`, two ViT-B/16 teachers -> ViT-S/16 student,
#      224 px, bf16, batch 256, on generated 500x375 JPEGs in WebDataset shards, eager vs
#      --trainer.compile blocks (CUDA graphs), JPEGs decoded on the GPU vs in 12 workers
#      (benchmarks/throughput.py; goal: 8,000 img/s uncached, 3,748 today without data);
#   2. `moma bench --groups '[compile]'` at 224 px, batch 256: teacher forward (goal: ViT-B/16
#      at 55% of the bf16 peak, 41% today), student step, MOMA step, MoCo v3 step, eager vs
#      compiled;
#   3. `moma bench --groups '[data]'` at 224 px: every data path on this machine's cores and GPU;
#   4. the same compile group at 32 px (the most dispatch-bound steps);
#   5. cached epochs (goal: 25,000 img/s): the same distillation from an image folder with the
#      teacher-target cache on (CACHE_FLAGS, default `--cache.views 1`); the cache is built
#      before the first step, so the timed steps read stored targets.
#
#   benchmarks/gpu_check.sh OUT                 # on the GPU machine
#   SMOKE=1 DEVICE=cpu benchmarks/gpu_check.sh OUT   # a CPU-sized check of the script
#
# Set MOMA (default: moma) to the command, PY (default: python3) to its Python.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: gpu_check.sh OUT}"
MOMA="${MOMA:-moma}"
PY="${PY:-python3}"
DEVICE="${DEVICE:-cuda}"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$OUT"
START=$SECONDS
stage() { echo "=== $(date -u +%H:%M:%S) +$((SECONDS - START))s: $*"; }

if [ "${SMOKE:-0}" = 1 ]; then
  TP=(--images 64 --batch 8 --steps 2 --warm 1 --workers 1 --compile none --decode workers)
  C224=(--sizes tiny --steps 1 --warmup 1 --compile_backend aot_eager)
  D224=(--sizes tiny --steps 2 --warmup 1 --jpeg_images 16 --data_workers 1)
  C32=(--sizes tiny --steps 1 --warmup 1 --compile_backend aot_eager)
  CA=(--images 64 --batch 8 --warm 1 --steps 2 --workers 1 --compile none --decode workers)
else
  TP=(--images 12288 --batch 256 --steps 30 --warm 8 --workers 12 --compile none,blocks
      --decode device,workers)
  C224=(--sizes 224 --batch_size 256 --steps 8 --warmup 4 --matmul_size 8192)
  D224=(--sizes 224 --batch_size 256 --steps 20 --warmup 3 --jpeg_images 4096 --data_workers 12)
  C32=(--sizes fmnist --batch_size 1024 --steps 10 --warmup 4 --matmul_size 8192)
  CA=(--images 12288 --batch 256 --warm 8 --steps 40 --workers 12 --compile blocks --decode device)
fi

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
$PY -c "import sys, os, torch, torchvision, timm, lightning; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda', os.cpu_count(), 'CPUs')"

stage "1. distillation throughput, data included (224 px, 2x ViT-B/16 -> ViT-S/16, bf16)"
timeout "${T_TP:-330}" $PY benchmarks/throughput.py --work "$WORK/tp" "${TP[@]}" --timeout 150 \
  > "$OUT/throughput.log" 2>&1
echo "rc $?"; cat "$WORK/tp/throughput.md" 2>/dev/null | tee "$OUT/throughput.md" || tail -n 20 "$OUT/throughput.log"

stage "2. eager vs compiled blocks, 224 px, batch 256, bf16"
timeout "${T_C224:-170}" $MOMA bench "${C224[@]}" --groups '[compile]' --precision bf16 \
  --device "$DEVICE" --out_dir "$OUT/bench-224-compile" > "$OUT/bench-224-compile.log" 2>&1
echo "rc $?"; grep -E "compiled|eager|matmul" "$OUT/bench-224-compile/bench.md" 2>/dev/null

stage "3. data paths, 224 px"
timeout "${T_D224:-100}" $MOMA bench "${D224[@]}" --groups '[data]' --device "$DEVICE" \
  --out_dir "$OUT/bench-224-data" > "$OUT/bench-224-data.log" 2>&1
echo "rc $?"; grep -A 9 "Data pipeline per CPU" "$OUT/bench-224-data/bench.md" 2>/dev/null

stage "4. eager vs compiled blocks, 32 px, batch 1024, bf16"
timeout "${T_C32:-100}" $MOMA bench "${C32[@]}" --groups '[compile]' --precision bf16 \
  --device "$DEVICE" --out_dir "$OUT/bench-32-compile" > "$OUT/bench-32-compile.log" 2>&1
echo "rc $?"; grep -E "compiled|eager" "$OUT/bench-32-compile/bench.md" 2>/dev/null

stage "5. cached epochs (CACHE_FLAGS: ${CACHE_FLAGS:=--cache.views 1})"
# 12288 images / 256 = 48 steps an epoch; the cache build (one teacher pass per image) runs
# before step 1, so every timed step reads stored targets.
timeout "${T_CACHE:-150}" $PY benchmarks/throughput.py --work "$WORK/tp" --layout folder \
  "${CA[@]}" --extra "$CACHE_FLAGS" --timeout 140 > "$OUT/cached.log" 2>&1
echo "rc $?"; tail -n 6 "$OUT/cached.log"
stage "done"
