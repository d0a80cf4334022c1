"""Shared pieces of the training pipeline: preprocessing, augmentation, weighted BCE, metrics."""

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

# One thread: the pipeline is meant to run beside other work on a 2-core machine.
torch.set_num_threads(int(os.environ.get("VIGIL_TRAIN_THREADS", "1")))

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("VIGIL_TRAIN_WORK", Path.home() / ".cache" / "vigil-train" / "work"))


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def normalise(u8: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 [N,H,W] -> float32 [N,1,H,W], value = (pixel/255 - mean)/std (what the daemon does)."""
    x = u8.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.float32(mean)) / np.float32(std)
    return x[:, None]


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Label-preserving augmentation of a normalised batch [B,1,H,W]: horizontal / vertical flips,
    shifts of up to 1/16 of the size (reflect padding) and a small gain/offset jitter (EL
    images differ in exposure)."""
    b, _, h, w = x.shape
    out = x.clone()
    f = torch.rand(b, generator=gen) < 0.5
    out[f] = out[f].flip(3)
    f = torch.rand(b, generator=gen) < 0.5
    out[f] = out[f].flip(2)
    pad = max(1, h // 16)
    padded = torch.nn.functional.pad(out, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    for i in range(b):
        out[i] = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    gain = 1.0 + 0.1 * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
    offset = 0.1 * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
    return out * gain + offset


def pos_weight(y: np.ndarray) -> torch.Tensor:
    """Per-label negatives / positives on the training labels."""
    p = y.sum(0)
    return torch.tensor((len(y) - p) / np.maximum(p, 1), dtype=torch.float32)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def metrics(y: np.ndarray, p: np.ndarray, thresholds, labels, acc_threshold=None) -> dict:
    """y: [N,L] {0,1}; p: [N,L] probabilities; thresholds: per-label 'on' values;
    acc_threshold: an extra threshold for label 0 (e.g. the one maximising validation accuracy)."""
    from sklearn.metrics import f1_score, hamming_loss

    t = np.asarray(thresholds, dtype=np.float64)
    pred = (p >= t).astype(int)
    yi = y.astype(int)
    aps = [average_precision(y[:, j], p[:, j]) for j in range(y.shape[1])]
    return {
        "accuracy_defective": round(float((pred[:, 0] == yi[:, 0]).mean()), 4),
        "accuracy_defective_at_0.5": round(float(((p[:, 0] >= 0.5) == yi[:, 0]).mean()), 4),
        **({"accuracy_defective_at_acc_threshold": round(float(((p[:, 0] >= acc_threshold) == yi[:, 0]).mean()), 4),
            "acc_threshold": acc_threshold} if acc_threshold is not None else {}),
        "ap": {l: round(a, 4) for l, a in zip(labels, aps)},
        "map": round(float(np.mean(aps)), 4),
        "f1": {l: round(float(f1_score(yi[:, j], pred[:, j], zero_division=0)), 4) for j, l in enumerate(labels)},
        "micro_f1": round(float(f1_score(yi, pred, average="micro", zero_division=0)), 4),
        "macro_f1": round(float(f1_score(yi, pred, average="macro", zero_division=0)), 4),
        "hamming_loss": round(float(hamming_loss(yi, pred)), 4),
        "subset_accuracy": round(float((pred == yi).all(1).mean()), 4),
    }


def predict(model, x: np.ndarray, batch=64, tta=False) -> np.ndarray:
    """Logits [N,L] for normalised inputs x [N,C,H,W]; tta averages logits over the 4 flips."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i : i + batch])
            if tta:
                z = sum(model(v) for v in (xb, xb.flip(3), xb.flip(2), xb.flip(2).flip(3))) / 4
            else:
                z = model(xb)
            outs.append(z.numpy())
    return np.concatenate(outs).astype(np.float32)


def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def train_loop(model, x_tr, y_tr, x_val, y_val, loss_fn, epochs, lr, batch, seed, labels, ckpt, soft=None):
    """AdamW + one-cycle cosine; keeps the weights with the best validation mAP in `ckpt`.

    loss_fn(logits, y, soft_batch_or_None) -> scalar."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x_tr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    best, history = -1.0, []
    for ep in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(x_tr), generator=gen).numpy()
        tot, n = 0.0, 0
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            if len(idx) < 2:
                continue
            xb = augment(torch.from_numpy(x_tr[idx]), gen)
            yb = torch.from_numpy(y_tr[idx])
            sb = torch.from_numpy(soft[idx]) if soft is not None else None
            loss = loss_fn(model(xb), yb, sb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            n += len(idx)
        pv = sigmoid(predict(model, x_val))
        m = metrics(y_val, pv, [0.5] * len(labels), labels)
        history.append({"epoch": ep + 1, "loss": round(tot / max(n, 1), 4), "val_map": m["map"],
                        "val_acc_defective": m["accuracy_defective"], "seconds": round(time.time() - t0, 1)})
        log(f"epoch {ep + 1}/{epochs} loss {tot / max(n, 1):.4f} val mAP {m['map']:.4f} "
            f"acc(def) {m['accuracy_defective']:.4f} ap {m['ap']} ({time.time() - t0:.0f}s)")
        if m["map"] > best:
            best = m["map"]
            torch.save(model.state_dict(), ckpt)
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    return history
