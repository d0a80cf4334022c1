#!/usr/bin/env python3
"""Road-scene student: the plain CNN of common.py (RGB input) distilled directly from NanoDet.

The elpv student's design, one stage shorter so the fp32 file stays under 5 MB (about 1 M parameters):
4x4/s4 patchify stem 3 -> 64 (S/4); 3x3/s2 64 -> 128 + 2x 3x3 128 (S/8); 3x3/s2 128 -> 256 + 1x1 256
(S/16); 1x1 256 -> 1024; global average pool; linear 1024 -> 8. BN folded at export, no depthwise
convs, no residual adds: its INT8 form stays on tract's integer kernels (see shared/notes/tract-int8.md;
1x1 convs need no im2col in INT8, and most MACs sit at S/8 and S/16 with 128-1024 outputs).

Targets: the teacher's image-level scores p_t of the exact view (road_data.py). Loss:
  (1 - alpha) * BCE(z_s, p_t >= 0.5; pos_weight) + alpha * T^2 * BCE(sigmoid(z_s / T), sigmoid(logit(p_t) / T))
pos_weight = negatives / positives of the hard training labels, capped at POS_WEIGHT_CAP (labels with
a handful of positives would otherwise get weights in the hundreds). In-loop augmentation is only
label-preserving: horizontal flip and a small gain/offset jitter (the views already carry crops,
scale changes and flips, each labelled by the teacher on the view itself).
Writes WORK/road_student.pt, road_student.onnx, road_student_logits.npz, road_student_history.json.
"""

import argparse
import time

import numpy as np
import torch

import common as C
import road_data as R
from common import Student, macs

WIDTHS = (64, 128, 256)
DEPTHS = (0, 2, 1)  # the last stage's extra conv is 1x1 (common.Student)
HEAD = 1024

POS_WEIGHT_CAP = 20.0


# Only horizontal flips and exposure jitter: the views already carry crops, scale changes and flips.
augment = C.Augment(vflip=False, shift=0)


def soft_targets(p: np.ndarray, T: float) -> np.ndarray:
    """sigmoid(logit(p_t) / T) of the teacher's scores."""
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return C.sigmoid(np.log(p / (1 - p)) / T).astype(np.float32)


def distillation_loss(y_tr: np.ndarray, T: float, a: float):
    """(pos_weight, loss_fn) for common.distillation_loss with pos_weight capped at POS_WEIGHT_CAP."""
    pw = C.pos_weight(y_tr).clamp(max=POS_WEIGHT_CAP)
    return pw, C.distillation_loss(pw, T, a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.8, help="weight of the KD term (0.5 tried: see the model card)")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--limit", type=int, default=0, help="frames per split (smoke test)")
    ap.add_argument("--onnx", default=str(C.WORK / "road_student.onnx"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    d = R.load(args.size, args.limit or None)
    tr, va, te = d["train"], d["val"], d["test"]
    mean, std = R.norm_stats(d["images"], tr)
    x = R.normalise(d["images"], mean, std)
    y = d["y"]
    T, a = args.temperature, args.alpha
    soft = soft_targets(d["soft"], T)

    model = Student(len(R.LABELS), widths=WIDTHS, depths=DEPTHS, head=HEAD, in_ch=3)
    C.log(f"road student: {macs(model, args.size) / 1e6:.0f} MMACs, "
          f"{sum(q.numel() for q in model.parameters()) / 1e6:.2f} M params, {args.size}px RGB, "
          f"{len(tr)} train views, alpha {a} T {T}")
    pw, loss_fn = distillation_loss(y[tr], T, a)

    t0 = time.time()
    hist = C.train_loop(model, x[tr], y[tr], x[va], y[va], loss_fn, args.epochs, args.lr, args.batch,
                        args.seed, R.LABELS, C.WORK / "road_student.pt", soft=soft[tr], augment_fn=augment)
    train_s = time.time() - t0
    f = C.finish_student(model, x, va, te, args.onnx, C.WORK / "road_student_logits.npz", len(R.LABELS),
                         args.size, in_ch=3)
    C.write_json(C.WORK / "road_student_history.json", {
        "size": args.size, "epochs": args.epochs, "lr": args.lr, "batch": args.batch, "seed": args.seed,
        "alpha": a, "temperature": T, "mean": mean, "std": std, "pos_weight": pw.tolist(),
        "pos_weight_cap": POS_WEIGHT_CAP, "limit": args.limit,
        **C.student_summary(f, args.size, WIDTHS, DEPTHS, HEAD),
        "train_seconds": round(train_s), "history": hist})


if __name__ == "__main__":
    main()
