#!/usr/bin/env bash
# Fast check of the whole elpv pipeline (well under 3 minutes on one core): 48 images per split,
# 64x64 input, 1 epoch each for teacher and student, then quantisation, the INT8 graph checks,
# thresholds, metrics, samples and golden file, all into a temporary folder. The committed bundle
# is not touched. Needs the venv of build_elpv.sh (VIGIL_PY, default ~/.cache/vigil-py) with the
# pinned packages installed; it installs nothing.
# Then the same for the road pipeline (about 1 minute): 6 frames per split, 64x64, 1 epoch of the
# student and of the MobileNetV2 comparison, on the cached NanoDet ONNX and decoded frames of a
# previous build_road.sh (VIGIL_ROAD_CACHE, default ~/.cache/vigil-road; the TensorFlow venv is
# not needed). Skipped with a message when that cache is
# missing; SMOKE_ROAD=0 skips it, SMOKE_ELPV=0 skips the elpv part.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${VIGIL_PY:-$HOME/.cache/vigil-py}/bin/python3"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 VIGIL_TRAIN_THREADS=1 VIGIL_TRAIN_WORK="$TMP/work"
mkdir -p "$VIGIL_TRAIN_WORK"
cd "$HERE"
if [ "${SMOKE_ELPV:-1}" = 1 ]; then
"$PY" teacher.py --limit 48 --epochs 1 --size 64 > "$TMP/teacher.log" 2>&1 || { cat "$TMP/teacher.log"; exit 1; }
"$PY" student.py --limit 48 --epochs 1 --size 64 > "$TMP/student.log" 2>&1 || { cat "$TMP/student.log"; exit 1; }
"$PY" bundle_elpv.py --limit 48 --bundle "$TMP/bundle" > "$TMP/bundle.log" 2>&1 || { cat "$TMP/bundle.log"; exit 1; }
"$PY" - "$TMP/bundle" <<'PYEOF'
import json, sys, tomllib
from pathlib import Path
b = Path(sys.argv[1])
m = tomllib.loads((b / "model.toml").read_text())
assert m["labels"] == ["defective", "uncertain", "monocrystalline"], m["labels"]
assert m["input"]["width"] == 64 and m["input"]["channels"] == "grey", m["input"]
assert m["output"]["activation"] == "sigmoid"
assert set(m["thresholds"]["labels"]) == set(m["labels"])
g = json.loads((b / "samples" / "golden.json").read_text())
assert 4 <= len(g["images"]) <= 6 and all((b / "samples" / i["file"]).is_file() for i in g["images"])
for f in ("model.onnx", "model.int8.onnx", "label_stats.json", "metrics.json", "MODEL_CARD.md"):
    assert (b / f).is_file(), f
print("smoke test OK:", json.loads((b / "metrics.json").read_text())["int8_ops"])
PYEOF
fi

ROAD_CACHE="${VIGIL_ROAD_CACHE:-$HOME/.cache/vigil-road}"
if [ "${SMOKE_ROAD:-1}" != 1 ]; then
  exit 0
elif [ ! -f "$ROAD_CACHE/nanodet.onnx" ] || [ ! -f "$ROAD_CACHE/dl/opencv-doc/usr/share/doc/opencv-doc/examples/data/vtest.avi" ]; then
  echo "road smoke test skipped: run models/train/build_road.sh once (needs $ROAD_CACHE/nanodet.onnx and the downloads)"
  exit 0
fi
export VIGIL_ROAD_CACHE="$ROAD_CACHE"
"$PY" road_data.py --limit 6 --size 64 > "$TMP/road_data.log" 2>&1 || { cat "$TMP/road_data.log"; exit 1; }
"$PY" student_road.py --limit 6 --epochs 1 --size 64 > "$TMP/road_student.log" 2>&1 || { cat "$TMP/road_student.log"; exit 1; }
"$PY" mnv2_road.py --limit 6 --epochs 1 --size 64 > "$TMP/road_mnv2.log" 2>&1 || { cat "$TMP/road_mnv2.log"; exit 1; }
"$PY" bundle_road.py --bundle "$TMP/road" > "$TMP/road_bundle.log" 2>&1 || { cat "$TMP/road_bundle.log"; exit 1; }
"$PY" - "$TMP/road" <<'PYEOF'
import json, sys, tomllib
from pathlib import Path
b = Path(sys.argv[1])
m = tomllib.loads((b / "model.toml").read_text())
assert m["labels"] == ["person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign"], m["labels"]
assert m["input"]["width"] == 64 and m["input"]["channels"] == "rgb" and len(m["input"]["mean"]) == 3, m["input"]
assert m["output"]["activation"] == "sigmoid"
assert set(m["thresholds"]["labels"]) == set(m["labels"])
g = json.loads((b / "samples" / "golden.json").read_text())
assert len(g["images"]) == 5 and all((b / "samples" / i["file"]).is_file() for i in g["images"])
for f in ("model.onnx", "model.int8.onnx", "label_stats.json", "metrics.json", "MODEL_CARD.md", "samples/LICENSE.md"):
    assert (b / f).is_file(), f
mm = json.loads((b / "metrics.json").read_text())
assert "mobilenetv2_fp32" in mm["results"], sorted(mm["results"])
print("road smoke test OK:", mm["int8_ops"])
PYEOF
