#!/usr/bin/env bash
# Fast check of the whole elpv pipeline (well under 3 minutes on one core): 48 images per split,
# 64x64 input, 1 epoch each for teacher and student, then quantisation, the INT8 graph checks,
# thresholds, metrics, samples and golden file, all into a temporary folder. The committed bundle
# is not touched. Needs the venv of build_elpv.sh (VIGIL_PY, default ~/.cache/vigil-py) with the
# pinned packages installed; it installs nothing.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${VIGIL_PY:-$HOME/.cache/vigil-py}/bin/python3"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 VIGIL_TRAIN_THREADS=1 VIGIL_TRAIN_WORK="$TMP/work"
mkdir -p "$VIGIL_TRAIN_WORK"
cd "$HERE"
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
