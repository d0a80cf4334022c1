#!/usr/bin/env python3
"""Write the golden reference scores the Rust tests compare against.

For every image in models/mobilenetv2-imagenet/samples/ this writes
  tests/golden/mobilenetv2/NAME.224.png   the image as RGB, resized with PIL
                                          Image.resize((224, 224), Image.BILINEAR) (whole frame
                                          stretched, no crop), saved losslessly
and one tests/golden/mobilenetv2/golden.json with onnxruntime's softmax probabilities for
model.onnx (fp32), model.int8.onnx (INT8, QOperator: what tract runs) and model.int8.qdq.onnx
(INT8, QDQ: what vigil's ONNX Runtime engine runs), computed from that 224 PNG as
  x = (pixel * (1/255) - mean) / std   per channel, float32, NCHW, batch 1
  probs = softmax(logits) in float64, stored rounded to 7 significant digits.

It also writes models/mobilenetv2-imagenet/samples/EXPECTED.md (torch and onnxruntime top-5).

Run from the repository root, after export_mobilenetv2.py:
  python3 models/export/make_golden.py
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "models" / "mobilenetv2-imagenet"
SAMPLES = BUNDLE / "samples"
GOLDEN = ROOT / "tests" / "golden" / "mobilenetv2"
FP32 = BUNDLE / "model.onnx"
INT8 = BUNDLE / "model.int8.onnx"
QDQ = BUNDLE / "model.int8.qdq.onnx"

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
SIZE = 224


def rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def tensor_from_png(path: Path) -> np.ndarray:
    px = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)  # HWC, 0..255
    assert px.shape == (SIZE, SIZE, 3), px.shape
    x = (px * np.float32(1.0 / 255.0) - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64).reshape(-1)
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def r7(v: float) -> float:
    return float(f"{v:.7g}")


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def int8_variants(path: Path):
    """Other faithful executions of an INT8 graph (model.int8.onnx or model.int8.qdq.onnx), to measure how far a correct INT8 runtime
    may land from onnxruntime's default result: onnxruntime without graph optimisations, and
    onnx's numpy ReferenceEvaluator (exact integer QLinearConv). The evaluator has no
    DequantizeLinear for opset 13, so its copy declares opset 19 (same semantics for u8/s8)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    runs = [lambda x: plain.run(["logits"], {"input": x})[0]]
    try:
        import onnx
        from onnx.reference import ReferenceEvaluator

        m = onnx.load(str(path))
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = max(o.version, 19)
        ref = ReferenceEvaluator(m)
        runs.append(lambda x: ref.run(["logits"], {"input": x})[0])
    except Exception as e:  # pragma: no cover
        print("onnx ReferenceEvaluator skipped:", e)
    return runs


def scores(probs: np.ndarray, labels):
    top = np.argsort(-probs, kind="stable")[:5]
    return {
        "top5": [[int(i), labels[i], r7(probs[i])] for i in top],
        "probs": [r7(p) for p in probs],
    }


def dump(doc) -> str:
    """Pretty JSON, but each probs array and each top-5 entry on a single line."""
    marks = {}
    for img in doc["images"]:
        for k in ("fp32", "int8", "int8_qdq"):
            key = f"@@{img['file']}:{k}@@"
            marks[key] = json.dumps(img[k]["probs"], separators=(",", ":"))
            img[k]["probs"] = key
            for j, entry in enumerate(img[k]["top5"]):
                tkey = f"{key}top{j}"
                marks[tkey] = json.dumps(entry, ensure_ascii=False)
                img[k]["top5"][j] = tkey
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    for key, val in marks.items():
        text = text.replace(json.dumps(key), val)
    json.loads(text)  # still valid
    return text + "\n"


def main():
    labels = (BUNDLE / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert len(labels) == 1000
    GOLDEN.mkdir(parents=True, exist_ok=True)
    s32 = session(FP32)
    int8_runs = {"int8": (session(INT8), int8_variants(INT8)), "int8_qdq": (session(QDQ), int8_variants(QDQ))}

    try:  # optional cross-check against torch for EXPECTED.md
        import torch

        torch.set_num_threads(1)
        import export_mobilenetv2 as exp  # same folder

        tmodel = exp.load_model()
    except Exception as e:  # pragma: no cover
        print("torch cross-check skipped:", e)
        tmodel = None

    images, expected = [], []
    agree, max_diff = {"int8": 0, "int8_qdq": 0}, {"int8": 0.0, "int8_qdq": 0.0}
    sources = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for src in sources:
        name = src.stem + ".224.png"
        out = GOLDEN / name
        Image.open(src).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR).save(out, optimize=True)
        x = tensor_from_png(out)
        p32 = softmax64(s32.run(["logits"], {"input": x})[0])
        entry = {"file": name, "source": rel(src), "fp32": scores(p32, labels)}
        row = {"src": src.name, "ort32": p32}
        for key, (s8, s8_variants) in int8_runs.items():
            p8 = softmax64(s8.run(["logits"], {"input": x})[0])
            agree[key] += int(p32.argmax() == p8.argmax())
            max_diff[key] = max(max_diff[key], float(np.abs(p32 - p8).max()))
            others = [softmax64(run(x)) for run in s8_variants]
            spread = max((float(np.abs(p - p8).max()) for p in others), default=0.0)
            stable = all(int(p.argmax()) == int(p8.argmax()) for p in others)
            entry[key] = scores(p8, labels)
            entry[key]["spread"] = float(f"{spread:.3g}")
            entry[key]["top1_stable"] = stable
            row[key] = p8
        images.append(entry)
        if tmodel is not None:
            with torch.no_grad():
                row["torch"] = softmax64(tmodel(torch.from_numpy(x)).numpy())
        expected.append(row)
        print(
            f"{src.name:20s} fp32 {labels[p32.argmax()]!r:24s} int8 {labels[row['int8'].argmax()]!r:24s}"
            f" int8_qdq {labels[row['int8_qdq'].argmax()]!r:24s}"
            f" spread {entry['int8']['spread']:.3g} / {entry['int8_qdq']['spread']:.3g}"
        )

    doc = {
        "model": "mobilenetv2-imagenet",
        "fp32_model": rel(FP32),
        "fp32_sha256": sha256(FP32),
        "int8_model": rel(INT8),
        "int8_sha256": sha256(INT8),
        "int8_qdq_model": rel(QDQ),
        "int8_qdq_sha256": sha256(QDQ),
        "generator": f"models/export/make_golden.py, onnxruntime {ort.__version__} CPUExecutionProvider",
        "resize": "PIL Image.resize((224, 224), Image.BILINEAR), RGB, whole frame, no crop",
        "preprocess": {"scale": 1.0 / 255.0, "mean": MEAN, "std": STD, "layout": "nchw"},
        "probs": "softmax of onnxruntime logits in float64, rounded to 7 significant digits",
        "int8_note": (
            "per-tensor INT8 MobileNetV2 amplifies one-step rounding differences layer by layer; "
            "int8.spread is the largest |p - golden| seen from other faithful executions of the "
            "same graph (onnxruntime without graph optimisations, onnx ReferenceEvaluator), and "
            "int8.top1_stable says whether they all agree on top-1. Compare an INT8 runtime "
            "with a tolerance of that order, not 1e-4; the fp32 probs are tight. int8_qdq is "
            "the same for model.int8.qdq.onnx (per-channel weights, every operator quantised)."
        ),
        "images": images,
    }
    (GOLDEN / "golden.json").write_text(dump(doc), encoding="utf-8")

    def top5(p):
        return ", ".join(f"{labels[i]} {p[i]:.3f}" for i in np.argsort(-p, kind="stable")[:5])

    lines = [
        "# Expected top-5 per sample",
        "",
        "Generated by `models/export/make_golden.py` from the 224x224 PNGs in",
        "`tests/golden/mobilenetv2/` (PIL bilinear resize of the whole frame, no crop).",
        "",
    ]
    for row in expected:
        lines.append(f"## {row['src']}")
        lines.append("")
        if "torch" in row:
            lines.append(f"- torch fp32: {top5(row['torch'])}")
        lines.append(f"- onnxruntime fp32 (model.onnx): {top5(row['ort32'])}")
        lines.append(f"- onnxruntime int8 (model.int8.onnx): {top5(row['int8'])}")
        lines.append(f"- onnxruntime int8 QDQ (model.int8.qdq.onnx): {top5(row['int8_qdq'])}")
        lines.append("")
    (SAMPLES / "EXPECTED.md").write_text("\n".join(lines), encoding="utf-8")

    for key in int8_runs:
        print(f"top-1 agreement fp32 vs {key}: {agree[key]}/{len(sources)}; max |p_fp32 - p_{key}|: {max_diff[key]:.4f}")
    if expected and "torch" in expected[0]:
        d = max(float(np.abs(r["torch"] - r["ort32"]).max()) for r in expected)
        print(f"max |p_torch - p_ort_fp32|: {d:.3g}")
    for m in (FP32, INT8, QDQ):
        print(f"{rel(m)}: {m.stat().st_size} bytes")


if __name__ == "__main__":
    main()
