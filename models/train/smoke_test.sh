#!/usr/bin/env bash
# Fast check of the whole elpv pipeline (well under 3 minutes on one core): 48 images per split,
# 64x64 input, 1 epoch each for teacher and student, then quantisation, the INT8 graph checks,
# thresholds, metrics, samples and golden file, all into a temporary folder. The committed bundle
# is not touched. Needs the venv of build_elpv.sh (VIGIL_PY, default ~/.cache/vigil-py) with the
# pinned packages installed; it installs nothing.
# Then the road pipeline (road_adapt.py, what adapt.sh runs; about 2-3 minutes): 40 vtest frames,
# 64x64, 30/10/10 composites, 1 epoch of each student, on the teachers and frames that a previous
# fetch_road.sh left in VIGIL_ROAD_CACHE (default ~/.cache/vigil-road; the TensorFlow venv is not
# needed). Skipped with a message when that cache is missing; SMOKE_ROAD=0 skips it, SMOKE_ELPV=0
# skips the elpv part.
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
assert m["model_int8_qdq"] == "model.int8.qdq.onnx", m
for f in ("model.onnx", "model.int8.onnx", "model.int8.qdq.onnx", "label_stats.json", "metrics.json", "MODEL_CARD.md"):
    assert (b / f).is_file(), f
print("smoke test OK:", json.loads((b / "metrics.json").read_text())["int8_ops"])
PYEOF
fi

ROAD_CACHE="${VIGIL_ROAD_CACHE:-$HOME/.cache/vigil-road}"
if [ "${SMOKE_ROAD:-1}" != 1 ]; then
  exit 0
elif [ ! -f "$ROAD_CACHE/nanodet.onnx" ] || [ ! -f "$ROAD_CACHE/centernet.onnx" ] || [ ! -d "$ROAD_CACHE/frames-vtest" ]; then
  echo "road smoke test skipped: run models/train/fetch_road.sh once (needs the teachers in $ROAD_CACHE and frames-vtest/)"
  exit 0
fi
export VIGIL_ROAD_CACHE="$ROAD_CACHE"
"$PY" road_adapt.py "$ROAD_CACHE/frames-vtest" --out "$TMP/road" --limit 40 --paste --composites 30,10,10 \
  --epochs-mnv2 1 --epochs-plain 1 --size 64 > "$TMP/road.log" 2>&1 || { cat "$TMP/road.log"; exit 1; }
"$PY" - "$TMP/road" <<'PYEOF'
import json, sys, tomllib
from pathlib import Path
b = Path(sys.argv[1])
m = tomllib.loads((b / "model.toml").read_text())
assert m["labels"] and set(m["labels"]) <= {"person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign"}, m["labels"]
assert m["input"]["width"] == 64 and m["input"]["channels"] == "rgb" and len(m["input"]["mean"]) == 3, m["input"]
assert m["output"]["activation"] == "sigmoid"
assert set(m["thresholds"]["labels"]) == set(m["labels"])
mm = json.loads((b / "metrics.json").read_text())
assert set(mm["results"]) == {"plain_fp32", "plain_int8", "mnv2_fp32"}, sorted(mm["results"])
assert mm["shipped"] in ("plain", "mnv2") and ("model_int8" in m) == (mm["shipped"] == "plain"), (mm["shipped"], m)
if mm["shipped"] == "plain":  # the INT8-capable student: golden scores for both variants
    g = json.loads((b / "samples" / "golden.json").read_text())
    assert g["labels"] == m["labels"] and 1 <= len(g["images"]) <= 5 and all((b / "samples" / i["file"]).is_file() for i in g["images"])
assert 1 <= len(list((b / "samples").glob("*.png"))) <= 5
for f in ["model.onnx", "metrics.json", "MODEL_CARD.md", "samples/LICENSE.md", "samples/EXPECTED.md"] + \
         (["model.int8.onnx", "model.int8.qdq.onnx"] if "model_int8" in m else []):
    assert (b / f).is_file(), f
print("road smoke test OK: ships", mm["shipped"], mm["labels"], mm["int8_ops"])
PYEOF
