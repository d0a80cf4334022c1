#!/usr/bin/env python3
"""Extra real stills for training the shipped road-scene bundle (never committed; train part only).

Collects, from the downloads fetch_road.sh leaves in ROAD_CACHE/dl, into ROAD_CACHE/extras/:
  - negatives and scenes: the photo wallpapers of Debian `plasma-workspace-wallpapers`, `mate-backgrounds`
    and `gnome-backgrounds` (one file per wallpaper, the largest JPEG/PNG/WebP);
  - road scenes: sahi 0.12.8's demo images (sdist `demo/demo_data`: a motorway, off-road jeeps; MIT);
  - a portrait: matplotlib's sample `grace_hopper.jpg` (PyPI wheel, `mpl-data/sample_data`);
  - the photos and figures of OpenCV's HTML tutorials (Debian `opencv-doc`, `html/`), LESS every one
    that shows an image of the evaluation set: an image is dropped when its file stem contains an
    eval still's name (of 5 characters or more: `messi5`, `building`, ...) or when its ImageNet-MobileNetV2 embedding (128 px input, global average pool, cosine) is within
    NEAR of any eval image's, or of any 2x2 / 3x3 tile of one (tutorial figures often put the
    still in a mosaic). The dropped list is written beside them (dropped.txt) to be looked at.
Each still is stored as RGB JPEG q 92, at most 1024 px on its long side. Teacher labels come later
(road_adapt.py labels every view with the teacher).

    python3 road_extras.py        # -> ROAD_CACHE/extras/*.jpg, extras.tsv (name, source), dropped.txt
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image

CACHE = Path(os.environ.get("VIGIL_ROAD_CACHE", Path.home() / ".cache" / "vigil-road"))
DL = CACHE / "dl"
OUT = CACHE / "extras"
EVAL = Path(__file__).resolve().parent.parent / "road-scene" / "eval"
NEAR = 0.80
MIN_SIDE = 160
LONG = 1024
EMBED = 128  # px: enough to find a copy of an eval image, 3x cheaper than 224


def wallpapers():
    roots = [("plasma-workspace-wallpapers", "usr/share/wallpapers"), ("mate-backgrounds", "usr/share/backgrounds/mate"),
             ("gnome-backgrounds", "usr/share/backgrounds/gnome")]
    for pkg, sub in roots:
        root = DL / pkg / sub
        groups = {}
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp") or "screenshot" in p.name:
                continue
            # plasma: NAME/contents/images/WxH.ext -> group NAME; mate: NAME_WxH.jpg -> NAME
            key = p.relative_to(root).parts[0] if "contents" in p.parts else p.stem.split("_")[0]
            groups.setdefault(key, []).append(p)
        for key, ps in sorted(groups.items()):
            yield f"wall_{root.parts[-1]}_{key}", max(ps, key=lambda q: q.stat().st_size), pkg


def others():
    for p in sorted((DL / "sahi").rglob("demo_data/*")):
        if p.name in ("small-vehicles1.jpeg", "terrain2.png"):
            yield f"sahi_{p.stem}", p, "sahi"
    p = DL / "matplotlib/matplotlib/mpl-data/sample_data/grace_hopper.jpg"
    if p.exists():
        yield "mpl_grace_hopper", p, "matplotlib"


def tutorials():
    root = DL / "opencv-doc/usr/share/doc/opencv-doc/opencv4/html"
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.stat().st_size >= 20_000:
            yield f"ocvhtml_{p.stem}", p, "opencv-doc-html"


class Embedder:
    def __init__(self):
        import torch
        import torchvision

        import common

        net = torchvision.models.mobilenet_v2(weights=None)
        net.load_state_dict(torch.load(common.weights_path(), map_location="cpu", weights_only=True))
        self.f = net.features.eval()
        self.torch = torch
        self.mean = np.array(common.IMAGENET_MEAN, np.float32)
        self.std = np.array(common.IMAGENET_STD, np.float32)

    def __call__(self, img: Image.Image) -> np.ndarray:
        a = np.asarray(img.convert("RGB").resize((EMBED, EMBED), Image.BILINEAR), np.float32) / 255
        x = ((a - self.mean) / self.std).transpose(2, 0, 1)[None]
        with self.torch.no_grad():
            v = self.f(self.torch.from_numpy(np.ascontiguousarray(x))).mean((2, 3))[0].numpy()
        return v / np.linalg.norm(v)


def tiles(img: Image.Image):
    yield img
    for n in (2, 3):
        w, h = img.width / n, img.height / n
        for i in range(n):
            for j in range(n):
                yield img.crop((round(i * w), round(j * h), round((i + 1) * w), round((j + 1) * h)))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.glob("*.jpg"):
        p.unlink()
    emb = Embedder()
    eval_stems = set()
    eval_vecs = []
    for p in sorted((EVAL / "images").glob("*.jpg")):
        eval_stems.add(p.stem.split("_", 1)[1].lower())
        eval_vecs += [emb(t) for t in tiles(Image.open(p))]
    eval_vecs = np.stack(eval_vecs)
    rows, dropped = [], []
    for name, path, src in [*wallpapers(), *others(), *tutorials()]:
        try:
            img = Image.open(path).convert("RGB")
        except Exception as e:  # a figure Pillow cannot read is not worth failing for
            dropped.append(f"{name}\tunreadable: {e}")
            continue
        if min(img.size) < MIN_SIDE:
            continue
        if src == "opencv-doc-html":
            stem = path.stem.lower()
            hit = next((s for s in eval_stems if len(s) >= 5 and s in stem), None)
            sim = max(float((eval_vecs @ emb(t)).max()) for t in tiles(img))
            if hit or sim >= NEAR:
                dropped.append(f"{name}\t{path.relative_to(DL)}\tstem={hit}\tcos={sim:.3f}")
                continue
        s = LONG / max(img.size)
        if s < 1:
            img = img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC)
        img.save(OUT / f"{name}.jpg", quality=92)
        rows.append(f"{name}\t{src}\t{path.relative_to(DL)}")
    (OUT / "extras.tsv").write_text("name\tsource\tfile\n" + "\n".join(rows) + "\n")
    (OUT / "dropped.txt").write_text("\n".join(dropped) + "\n")
    print(f"{len(rows)} extra stills in {OUT}, {len(dropped)} dropped (dropped.txt)")


if __name__ == "__main__":
    main()
