#!/usr/bin/env bash
# The exact commands behind BENCHMARKS.md. Each one runs `moma bench` (src/moma/bench/) in one
# process and writes OUT/bench.md (also printed) and OUT/bench.json.
#
#   benchmarks/run_all.sh                  # both sizes on this machine's CPU
#   DEVICE=cuda benchmarks/run_all.sh      # on a GPU
#
# OMP_WAIT_POLICY=PASSIVE: on a CPU shared with other jobs, libgomp's default (threads spin
# at every barrier) makes each parallel op wait for a descheduled thread, which slows the
# small ops of a masked student step up to 7x and scrambles the comparisons (BENCHMARKS.md).
# Set OMP_WAIT_POLICY= (empty) to measure torch's default on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
MOMA="${MOMA:-.venv/bin/moma}"
DEVICE="${DEVICE:-cpu}"
OUT="${OUT:-runs/bench}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY-PASSIVE}"
[ -n "$OMP_WAIT_POLICY" ] || unset OMP_WAIT_POLICY

uptime
# 32 px Fashion-MNIST sizes (6x192 ViT/4 teachers and student), fp32 and bf16, batch 256.
"$MOMA" bench --sizes fmnist --precision both --device "$DEVICE" --out_dir "$OUT/fmnist"
# 224 px ViT-Ti/S/B (ViT-B/16 teachers, ViT-S/16 student), batch 16, 3 timed steps.
"$MOMA" bench --sizes 224 --precision both --device "$DEVICE" --out_dir "$OUT/224"
# The 224 px teacher forwards alone, 5 timed steps (a short run that fits a quiet moment).
"$MOMA" bench --sizes 224 --groups '[teacher]' --steps 5 --device "$DEVICE" --out_dir "$OUT/224-teachers"
uptime
