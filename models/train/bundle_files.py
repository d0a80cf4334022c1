"""The files every bundle step writes (bundle_elpv.py, road_card.py): model.toml, the model card
(keeping its hand-written sections), the sample PNGs with EXPECTED.md, and the test split as a
`vigil eval` set. One writer each, so the two bundles cannot drift apart in format.

Golden scores (samples/golden.json) are computed by common.golden_scores / golden_document.
"""

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image


def write_manifest(bundle: Path, *, name: str, script: str, description: str, labels, size: int,
                   channels: str, mean, std, thresholds, threshold_comment: str, source: str,
                   licence: str):
    """model.toml of a sigmoid multi-label bundle with model.onnx + model.int8.onnx.

    thresholds: one (on, off, note) per label, note "" or a trailing TOML comment ("   # ...");
    threshold_comment: the comment lines (without "# ") above the per-label tables."""
    per = [f'[thresholds.labels."{l}"]\non = {o}{note}\noff = {f}\n'
           for l, (o, f, note) in zip(labels, thresholds)]
    comment = "\n".join(f"# {line}" for line in threshold_comment.splitlines())
    text = f'''# Bundle manifest: checked against model.onnx at load. Written by models/train/{script}.
name = "{name}"
description = "{description}"
model = "model.onnx"           # fp32 graph, output "logits" [1,{len(labels)}]
model_int8 = "model.int8.onnx"  # tract-friendly INT8: QLinearConv chain, per-tensor, u8/s8
model_int8_qdq = "model.int8.qdq.onnx"  # ONNX Runtime's INT8: QDQ, per-channel weights, every op
labels = {json.dumps(list(labels))}

[input]
width = {size}
height = {size}
channels = "{channels}"
layout = "nchw"
dtype = "f32"
scale = 0.00392156862745098   # value = (pixel * scale - mean) / std
mean = {json.dumps(list(mean))}
std = {json.dumps(list(std))}

[output]
activation = "sigmoid"   # the graph outputs logits

[thresholds]
default = {{ on = 0.5, off = 0.4 }}

{comment}
{chr(10).join(per)}
[provenance]
source = "{source}"
licence = "{licence}"
'''
    (bundle / "model.toml").write_text(text, encoding="utf-8")


def kept_sections(card: Path, defaults: dict) -> dict:
    """The hand-written `## NAME` sections of an existing model card (measured on boards, experiment
    logs), by name; `defaults[NAME]` where the card or the section does not exist yet. Each value
    ends with one newline (or is empty)."""
    old = card.read_text(encoding="utf-8") if card.exists() else ""
    out = {}
    for name, default in defaults.items():
        hit = re.search(rf"^## {re.escape(name)}\b.*?(?=^## |\Z)", old, flags=re.S | re.M)
        out[name] = hit.group(0).rstrip() + "\n" if hit else default
    return out


def write_card(card: Path, text: str):
    """Write the card; the caller built `text` around `kept_sections`."""
    card.write_text(text, encoding="utf-8")


def save_sample(pixels: np.ndarray, out: Path) -> np.ndarray:
    """Save uint8 pixels ([H,W] grey or [H,W,3] RGB) as PNG and return them as read back (checked
    equal: the golden scores are computed from the file the Rust tests read)."""
    mode = "L" if pixels.ndim == 2 else "RGB"
    Image.fromarray(pixels, mode=mode).save(out, optimize=True)
    back = np.asarray(Image.open(out).convert(mode), dtype=np.uint8)
    assert np.array_equal(back, pixels), out
    return back


def write_expected_md(samples_dir: Path, intro: list, header: list, rows: list, labels):
    """samples/EXPECTED.md: a title, intro lines, then one table row per sample."""
    lines = [*intro, "", "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    lines += ["", "Score order: " + ", ".join(labels) + "."]
    (samples_dir / "EXPECTED.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_eval_csv(csv: Path, rows, labels):
    """A `vigil eval` set in the 0/1-column layout (docs/eval.md): header path,LABEL,..., then one
    line per image with its path relative to the CSV and 0/1 per label."""
    lines = ["path," + ",".join(labels)]
    for path, y in rows:
        lines.append(f"{path}," + ",".join(str(int(v)) for v in y))
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")


def markdown_table(header: list, rows: list) -> str:
    """A markdown table (no trailing newline)."""
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
