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
logits on the (un-augmented) training image; with several --teachers, the mean of their logits.
The hard term's `defective` target may carry the expert probability (--soft, as in teacher.py).
--stem 8 at --size 224 keeps the 128-px network's grid (28 against 32) and cost.
Writes WORK/student.pt, student_logits.npz, student_history.json and the fp32 ONNX (opset 13,
fixed shape, input "input", output "logits").
"""

import argparse
import time

import numpy as np
import torch

import common as C
import elpv_data as D
import teacher as TEACHER
from common import DEPTHS, HEAD, WIDTHS, Student, macs  # the network lives in common.py


def teacher_logits(names, train_idx):
    """Train logits of the named teachers (WORK/NAME_logits.npz), averaged."""
    zs = []
    for name in names:
        t = np.load(C.WORK / f"{name}_logits.npz")
        assert np.array_equal(t["train_idx"], train_idx), f"{name} was trained on another split"
        zs.append(t["train"])
    return np.mean(zs, axis=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the KD term")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--teachers", default="teacher", help="comma-separated teacher names (WORK/NAME_logits.npz)")
    ap.add_argument("--soft", type=float, default=0.0, help="weight of the expert probability in the defective target")
    ap.add_argument("--stem", type=int, default=4)
    ap.add_argument("--aug", default="basic", choices=sorted(TEACHER.AUGMENTS))
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--onnx", default=str(C.WORK / "student.onnx"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    d = D.load(args.size, args.limit or None)
    mean, std = D.norm_stats(d["images"], d["train"])
    x = C.normalise(d["images"], mean, std)
    y = d["y"]
    tr, va, te = d["train"], d["val"], d["test"]
    teachers = args.teachers.split(",")
    z_t = teacher_logits(teachers, tr)
    soft = torch.sigmoid(torch.from_numpy(z_t) / args.temperature).numpy()
    y_train = TEACHER.targets(d, args.soft)

    model = Student(len(D.LABELS), stem=args.stem)
    C.log(f"student: {macs(model, args.size) / 1e6:.0f} MMACs, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, {args.size}px, stem {args.stem}, "
          f"alpha {args.alpha} T {args.temperature}, teachers {teachers}, soft {args.soft}, aug {args.aug}, "
          f"ema {args.ema}, {torch.get_num_threads()} threads")
    pw = C.pos_weight(y[tr])
    T, a = args.temperature, args.alpha
    loss_fn = C.distillation_loss(pw, T, a)

    t0 = time.time()
    hist = C.train_loop(model, x[tr], y_train[tr], x[va], y[va], loss_fn, args.epochs, args.lr, args.batch,
                        args.seed, D.LABELS, C.WORK / "student.pt", soft=soft,
                        augment_fn=TEACHER.AUGMENTS[args.aug], ema=args.ema)
    train_s = time.time() - t0
    f = C.finish_student(model, x, va, te, args.onnx, C.WORK / "student_logits.npz", len(D.LABELS), args.size)
    C.write_json(C.WORK / "student_history.json", {
        "size": args.size, "epochs": args.epochs, "lr": args.lr, "batch": args.batch, "seed": args.seed,
        "alpha": a, "temperature": T, "mean": mean, "std": std, "pos_weight": pw.tolist(),
        "teachers": teachers, "soft": args.soft, "aug": TEACHER.AUGMENTS[args.aug].describe(), "ema": args.ema,
        **C.student_summary(f, args.size, WIDTHS, DEPTHS, HEAD, args.stem),
        "train_seconds": round(train_s), "history": hist})


if __name__ == "__main__":
    main()
