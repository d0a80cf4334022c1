#!/usr/bin/env python3
"""Writes 1280x720 JPEG frames (quality 90) for the benchmarks' heavy-decode case: the first 12
road-scene evaluation photos, scaled to cover 1280x720 (bicubic) and centre-cropped.

    python3 benches/hd_frames.py /tmp/hd
    vigil bench --model models/road-scene --images /tmp/hd --frames 500

Needs: pillow (benches/requirements.txt).
"""
import glob
import os
import sys

from PIL import Image

out = sys.argv[1] if len(sys.argv) > 1 else "hd-frames"
os.makedirs(out, exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))
photos = sorted(glob.glob(os.path.join(here, "..", "models/road-scene/eval/images/*.jpg")))[:12]
for n, path in enumerate(photos, 1):
    im = Image.open(path).convert("RGB")
    s = max(1280 / im.width, 720 / im.height)
    im = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
    left, top = (im.width - 1280) // 2, (im.height - 720) // 2
    im.crop((left, top, left + 1280, top + 720)).save(os.path.join(out, f"hd{n:02d}.jpg"), quality=90)
print(f"{len(photos)} frames in {out}")
