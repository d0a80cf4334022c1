#!/usr/bin/env python3
"""The pipeline a user would write instead of vigil: Pillow decode and resize, numpy
normalisation, onnxruntime inference, sigmoid, per-label thresholds.

It reads the same bundle manifest (model.toml) as vigil, so input size, channels, scale, mean,
std and thresholds are the bundle's own. It replays the same images in a loop, like
`vigil bench --images`, and prints frames/s and per-stage ms/frame, one thread for decode and
preprocessing (Python's), `--threads` for onnxruntime's intra-op pool.

    python3 benches/reference_ort.py --model models/road-scene --images 'models/road-scene/eval/images/*.jpg' --frames 500 --threads 1

Needs: onnxruntime, pillow, numpy (benches/requirements.txt).
"""
import argparse
import glob
import json
import os
import sys
import time
import tomllib

import numpy as np
import onnxruntime as ort
from PIL import Image


def load_images(pattern):
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*")
    paths = sorted(p for p in glob.glob(pattern) if p.lower().endswith((".jpg", ".jpeg", ".png")))
    if not paths:
        sys.exit(f"--images {pattern}: no .jpg/.jpeg/.png files")
    # Files are read into memory once, as vigil's files source re-reads from the page cache.
    return [open(p, "rb").read() for p in paths]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="bundle directory (holds model.toml)")
    ap.add_argument("--variant", choices=["fp32", "int8"], default="fp32")
    ap.add_argument("--images", required=True, help="file, directory or glob")
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--draft", action="store_true",
                    help="let Pillow decode JPEGs at a reduced DCT scale (Image.draft), as vigil does")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()

    with open(os.path.join(a.model, "model.toml"), "rb") as f:
        m = tomllib.load(f)
    key = "model" if a.variant == "fp32" else "model_int8"
    if key not in m:
        sys.exit(f"{a.model}/model.toml: no `{key}` (this bundle has no {a.variant} variant)")
    inp = m["input"]
    w, h, grey = inp["width"], inp["height"], inp["channels"] == "grey"
    scale = np.float32(inp.get("scale", 1 / 255))
    mean = np.array(inp["mean"], np.float32)
    std = np.array(inp["std"], np.float32)
    labels = m["labels"]
    th = m.get("thresholds", {})
    default_on = th.get("default", {}).get("on", 0.5)
    on = np.array([th.get("labels", {}).get(l, {}).get("on", default_on) for l in labels], np.float32)

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(os.path.join(a.model, m[key]), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    files = load_images(a.images)
    import io

    def frame(data):
        t0 = time.perf_counter()
        im = Image.open(io.BytesIO(data))
        if a.draft:
            # The smallest 1/2, 1/4 or 1/8 scale that still covers (w, h), from the DCT.
            im.draft("L" if grey else "RGB", (w, h))
        im = im.convert("L" if grey else "RGB")  # forces the decode
        t1 = time.perf_counter()
        im = im.resize((w, h), Image.BILINEAR)
        x = np.asarray(im, np.float32) * scale
        x = (x - mean) / std if not grey else (x - mean[0]) / std[0]
        x = x[None, None] if grey else x.transpose(2, 0, 1)[None]
        x = np.ascontiguousarray(x)
        t2 = time.perf_counter()
        logits = sess.run(None, {name: x})[0][0]
        t3 = time.perf_counter()
        on_now = (1 / (1 + np.exp(-logits))) >= on
        return (t1 - t0, t2 - t1, t3 - t2), int(on_now.sum())

    for i in range(min(10, a.frames)):  # warm-up
        frame(files[i % len(files)])
    stages = np.zeros(3)
    start = time.perf_counter()
    for i in range(a.frames):
        s, _ = frame(files[i % len(files)])
        stages += s
    wall = time.perf_counter() - start
    r = {
        "engine": f"onnxruntime {ort.__version__}, Pillow {Image.__version__}",
        "threads": a.threads,
        "draft": a.draft,
        "frames": a.frames,
        "fps": a.frames / wall,
        "ms_per_frame": 1000 * wall / a.frames,
        "decode_ms": 1000 * stages[0] / a.frames,
        "prepare_ms": 1000 * stages[1] / a.frames,
        "infer_ms": 1000 * stages[2] / a.frames,
    }
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{r['engine']}, {a.threads} thread(s){', draft' if a.draft else ''}: {r['fps']:.1f} frames/s, {r['ms_per_frame']:.2f} ms/frame "
              f"(decode {r['decode_ms']:.2f}, prepare {r['prepare_ms']:.2f}, infer {r['infer_ms']:.2f})")


if __name__ == "__main__":
    main()
