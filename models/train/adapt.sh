#!/usr/bin/env bash
# Tune a road-scene bundle to your own camera (docs/adapt.md), on a workstation CPU:
#
#   models/train/adapt.sh FRAMES_DIR --out BUNDLE [--eval LABELS.csv] [road_adapt.py options]
#
# FRAMES_DIR holds the camera's frames as JPEG/PNG files whose names sort in capture order (what
# `vigil record` writes). The frames are labelled by the teacher (NanoDet + CenterNet), split by time
# (75 / 10 / 15 %), the students are trained, the plain CNN is quantised to INT8, thresholds are chosen
# on the validation part, and BUNDLE gets model.onnx, model.int8.onnx, model.toml, MODEL_CARD.md,
# metrics.json and samples/. With --eval (a `vigil eval` label-list CSV of your own hand-labelled
# images) it also writes BUNDLE/eval-report/{fp32,int8}/ from `vigil eval`.
#
# First run: creates the venvs and downloads the teachers (models/train/fetch_road.sh). About 40-50 min
# for 2,000 frames on 2 cores. Environment: VIGIL_PY, VIGIL_TF, VIGIL_ROAD_CACHE, VIGIL_TRAIN_WORK,
# VIGIL_NICE (default 10), SKIP_INSTALL=1, VIGIL_BIN (the vigil binary; default: built with cargo).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
if [ $# -lt 3 ] || [ "${1:0:1}" = "-" ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
FRAMES="$1"; shift
[ -d "$FRAMES" ] || { echo "adapt.sh: $FRAMES: not a directory of frames" >&2; exit 2; }
VENV="${VIGIL_PY:-$HOME/.cache/vigil-py}"
[ "${SKIP_INSTALL:-0}" = 1 ] || "$HERE/fetch_road.sh"   # venvs, teachers, downloads (idempotent)
VIGIL="${VIGIL_BIN:-}"
if [ -z "$VIGIL" ]; then
  (cd "$ROOT" && cargo build --release -q)
  VIGIL="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | "$VENV/bin/python3" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/vigil"
fi
# One thread per process: on a busy 2-core machine OpenMP's spinning threads slow training down badly.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 VIGIL_TRAIN_THREADS=1
cd "$HERE"
exec nice -n "${VIGIL_NICE:-10}" "$VENV/bin/python3" road_adapt.py "$FRAMES" --vigil "$VIGIL" "$@"
