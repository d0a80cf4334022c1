#!/usr/bin/env python3
"""Student: a plain, wide CNN shaped for tract's INT8 kernels, distilled from the teacher.

Architecture (input [1,1,S,S], S=128 by default; every conv is dense, BN folded at export, ReLU):
  stem   4x4 stride 4, 1 -> 64             (S/4)
  stage  3x3 s2 64 -> 128, 3x3 128 -> 128 x2   (S/8)
  stage  3x3 s2 128 -> 256, 3x3 256 -> 256 x2  (S/16)
  stage  3x3 s2 256 -> 512, 1x1 512 -> 512     (S/32)
  1x1 512 -> 1024, global average pool, linear 1024 -> n_labels (logits)
No depthwise convs, no residual adds: QLinearConv chains stay integer in tract (see
../../../shared/notes/tract-int8.md: patchify stem, most MACs at low resolution with wide outputs).

Loss: (1 - alpha) * BCE(pos_weight from train label frequencies) + alpha * T^2 * binary KD, where
binary KD = BCE(sigmoid(z_s / T), sigmoid(z_t / T)) per label, z_t the teacher's 4-flip-averaged
logits on the (un-augmented) training image. Writes WORK/student.pt, student_logits.npz,
student_history.json and the fp32 ONNX (opset 13, fixed shape, input "input", output "logits").
"""

import argparse
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import common as C
import elpv_data as D

WIDTHS = (64, 128, 256, 512)
HEAD = 1024
DEPTHS = (0, 2, 2, 1)  # extra 3x3 stride-1 convs per stage after its stride-2 (or stem) conv
OPSET = 13


def cbr(cin, cout, k, s, p):
    return [nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Student(nn.Module):
    def __init__(self, n_labels, widths=WIDTHS, depths=DEPTHS, head=HEAD):
        super().__init__()
        layers = cbr(1, widths[0], 4, 4, 0)
        for _ in range(depths[0]):
            layers += cbr(widths[0], widths[0], 3, 1, 1)
        for i in range(1, len(widths)):
            layers += cbr(widths[i - 1], widths[i], 3, 2, 1)
            k = 1 if i == len(widths) - 1 else 3  # at S/32 a 3x3 sees mostly padding: 1x1 is cheaper
            for _ in range(depths[i]):
                layers += cbr(widths[i], widths[i], k, 1, k // 2)
        layers += cbr(widths[-1], head, 1, 1, 0)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head, n_labels)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def fused(model: Student) -> nn.Module:
    """Eval copy with each Conv+BN folded into one biased Conv (what gets exported)."""
    model.eval()
    out = []
    mods = list(model.features)
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Conv2d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
            out.append(fuse_conv_bn_eval(m, mods[i + 1]))
            i += 2
        else:
            out.append(nn.ReLU() if isinstance(m, nn.ReLU) else m)
            i += 1
    return nn.Sequential(*out, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), model.fc).eval()


def macs(model: nn.Module, size: int) -> int:
    tot = 0

    def hook(mod, _i, o):
        nonlocal tot
        if isinstance(mod, nn.Conv2d):
            tot += o.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups
        elif isinstance(mod, nn.Linear):
            tot += mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    for h in hs:
        h.remove()
    return tot


def export_onnx(model: nn.Module, size: int, path):
    dummy = torch.zeros(1, 1, size, size)
    torch.onnx.export(model, (dummy,), str(path), input_names=["input"], output_names=["logits"],
                      opset_version=OPSET, do_constant_folding=True, dynamo=False)
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]
    (inp,), (out,) = m.graph.input, m.graph.output
    assert dims(inp) == [1, 1, size, size] and dims(out) == [1, len(D.LABELS)], (dims(inp), dims(out))
    ops = sorted({n.op_type for n in m.graph.node})
    assert "BatchNormalization" not in ops, ops
    C.log("fp32 ONNX ops:", ops)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the KD term")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--onnx", default=str(C.WORK / "student.onnx"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    d = D.load(args.size, args.limit or None)
    mean, std = D.norm_stats(d["images"], d["train"])
    x = C.normalise(d["images"], mean, std)
    y = d["y"]
    tr, va, te = d["train"], d["val"], d["test"]
    t = np.load(C.WORK / "teacher_logits.npz")
    assert np.array_equal(t["train_idx"], tr), "teacher was trained on another split"
    soft = torch.sigmoid(torch.from_numpy(t["train"]) / args.temperature).numpy()

    model = Student(len(D.LABELS))
    C.log(f"student: {macs(model, args.size) / 1e6:.0f} MMACs, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, {args.size}px, "
          f"alpha {args.alpha} T {args.temperature}")
    pw = C.pos_weight(y[tr])
    bce = nn.BCEWithLogitsLoss(pos_weight=pw)
    T, a = args.temperature, args.alpha

    def loss_fn(z, yb, sb):
        hard = bce(z, yb)
        if a == 0:
            return hard
        kd = nn.functional.binary_cross_entropy_with_logits(z / T, sb) * T * T
        return (1 - a) * hard + a * kd

    t0 = time.time()
    hist = C.train_loop(model, x[tr], y[tr], x[va], y[va], loss_fn, args.epochs, args.lr, args.batch,
                        args.seed, D.LABELS, C.WORK / "student.pt", soft=soft)
    train_s = time.time() - t0
    f = fused(model)
    # folding must not change the function
    with torch.no_grad():
        xb = torch.from_numpy(x[va[:16]])
        diff = float((f(xb) - model.eval()(xb)).abs().max())
    C.log(f"BN fold max |diff| {diff:.2e}")
    assert diff < 1e-3
    np.savez(C.WORK / "student_logits.npz", val=C.predict(f, x[va]), test=C.predict(f, x[te]))
    export_onnx(f, args.size, args.onnx)
    C.write_json(C.WORK / "student_history.json", {
        "size": args.size, "epochs": args.epochs, "lr": args.lr, "batch": args.batch, "seed": args.seed,
        "alpha": a, "temperature": T, "mean": mean, "std": std, "pos_weight": pw.tolist(),
        "macs": macs(f, args.size), "params": sum(p.numel() for p in f.parameters()),
        "widths": list(WIDTHS), "depths": list(DEPTHS), "head": HEAD,
        "train_seconds": round(train_s), "history": hist})


if __name__ == "__main__":
    main()
