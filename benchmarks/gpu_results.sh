#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md (section "GPU") and RESULTS.md in one short run (about
# 9 minutes on an H100/H200): `moma bench` at both sizes in bf16, a 5-epoch two-teacher distillation on
# Fashion-MNIST with its kNN and linear evaluation, and the distillation-defaults ablation.
#
#   benchmarks/gpu_results.sh TEACHERS OUT   # TEACHERS: a quickstart folder (mae/, mocov3/)
#
# Every stage has its own time limit and writes into OUT as it goes, so a run cut short
# keeps what it measured. SMOKE=1 shrinks everything to a CPU-sized check of the script.
set -uo pipefail
cd "$(dirname "$0")/.."
QS="${1:?usage: gpu_results.sh TEACHERS OUT}"
OUT="${2:?usage: gpu_results.sh TEACHERS OUT}"
MOMA="${MOMA:-moma}"
DEVICE="${DEVICE:-cuda}"
WORK="$(mktemp -d)"
mkdir -p "$OUT"
START=$SECONDS
left() { echo $(( ${BUDGET_S:-540} - (SECONDS - START) )); }
stage() { echo "=== $(date -u +%H:%M:%S) +$((SECONDS - START))s: $*"; }

if [ "${SMOKE:-0}" = 1 ]; then
  B32=(--sizes tiny --steps 2 --warmup 1 --jpeg_images 16)
  B224=(--sizes tiny --steps 2 --warmup 1 --jpeg_images 0 --groups '[teacher]')
  EPOCHS=(--trainer.max_steps 4 --data.subset 512 --data.batch_size 64)
  EVAL=(--data.subset 512)
  ABL=(--steps 3 --seeds 0 --eval-subset 512 --linear-epochs 1 --batch-size 64 --only default "mask 0.95")
else
  B32=(--sizes fmnist --steps 20 --warmup 5)
  B224=(--sizes 224 --batch_size 64 --steps 10 --warmup 3 --batch_sweep '[16,128]' --jpeg_images 256)
  EPOCHS=(--trainer.max_epochs 5)
  EVAL=()
  ABL=(--steps 500 --seeds 0 1 2)
fi

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
python3 -c "import sys, torch, timm, lightning; print(sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"

stage "bench 32 px, bf16"
timeout "${T_B32:-130}" $MOMA bench "${B32[@]}" --precision bf16 --device "$DEVICE" \
  --matmul_size 8192 --out_dir "$OUT/bench-fmnist" > "$WORK/bench-fmnist.log" 2>&1
echo "rc $?"; tail -n 5 "$WORK/bench-fmnist.log"

stage "bench 224 px, bf16"
timeout "${T_B224:-130}" $MOMA bench "${B224[@]}" --precision bf16 --device "$DEVICE" \
  --matmul_size 8192 --out_dir "$OUT/bench-224" > "$WORK/bench-224.log" 2>&1
echo "rc $?"; tail -n 5 "$WORK/bench-224.log"

stage "distill mocov3 + mae -> random (5 epochs), then kNN and linear"
T0=$SECONDS
timeout "${T_DISTILL:-120}" $MOMA distill --config configs/moma/fashion_mnist_both_to_random.yaml \
  --teachers "[{\"path\": \"$QS/mocov3/backbone.safetensors\"}, {\"path\": \"$QS/mae/backbone.safetensors\"}]" \
  "${EPOCHS[@]}" --trainer.progress_bar false --trainer.out_dir "$WORK/distill" \
  > "$OUT/distill.log" 2>&1
echo "rc $? in $((SECONDS - T0)) s"; grep -v "^\s*$" "$OUT/distill.log" | tail -n 4
for proto in knn linear; do
  timeout 60 $MOMA eval "$proto" --backbone "$WORK/distill" "${EVAL[@]}" --name gpu-both-to-random \
    >> "$OUT/distill.log" 2>&1
  echo "$proto rc $?"
done
tail -n 6 "$OUT/distill.log"

stage "ablation of the distillation defaults ($(left) s left)"
timeout "$(left)" python3 benchmarks/ablate_distill.py --teachers "$QS" "${ABL[@]}" \
  --out "$OUT/ablation" --work "$WORK/ablation" > "$WORK/ablation.log" 2>&1
echo "rc $?"; cat "$OUT/ablation/ablation.md" 2>/dev/null || tail -n 20 "$WORK/ablation.log"
stage "done"
