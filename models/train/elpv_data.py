#!/usr/bin/env python3
"""ELPV solar-cell data for the factory bundle (models/elpv-solar).

Source: PyPI `elpv-dataset` (Deitsch et al., "Automatic classification of defective photovoltaic
module cells in electroluminescence images", Solar Energy 2019). 2,624 grey 300x300 cell images,
each with an expert defect probability in {0, 1/3, 2/3, 1} and the module type (mono / poly).
Data licence: CC-BY-NC-SA-4.0 (non-commercial, share-alike).

Labels (multi-hot, in this order):
  defective        defect probability >= 0.5  (2/3 or 1)
  uncertain        the experts were unsure   (1/3 or 2/3)
  monocrystalline  module type "mono" (0 = polycrystalline)

Split (the paper's protocol): stratified 75/25 train/test on the 8 (probability, type) strata with
a fixed seed; validation = 15 % of train, stratified the same way, carved out of train.

Images are resized once with Pillow's bilinear filter (what the daemon's fast_image_resize
Convolution(Bilinear) does) to SIZE x SIZE and cached as uint8 in CACHE_DIR.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

LABELS = ["defective", "uncertain", "monocrystalline"]
SEED = 20190101          # split seed (fixed; the paper gives no seed)
TEST_FRACTION = 0.25
VAL_FRACTION = 0.15      # of the 75 % train part
CACHE_DIR = Path(os.environ.get("VIGIL_TRAIN_CACHE", Path.home() / ".cache" / "vigil-train"))


def dataset_dir() -> Path:
    import elpv_dataset

    return Path(elpv_dataset.__file__).resolve().parent / "data"


def read_labels_csv():
    """(file names, probabilities, types) in the csv's order."""
    names, probs, types = [], [], []
    for line in (dataset_dir() / "labels.csv").read_text().splitlines():
        if not line.strip():
            continue
        path, p, t = line.split()
        names.append(path)
        probs.append(float(p))
        types.append(t)
    return names, np.array(probs, dtype=np.float64), np.array(types)


def multi_hot(probs: np.ndarray, types: np.ndarray) -> np.ndarray:
    q = np.rint(probs * 3).astype(int)  # 0..3 thirds
    y = np.zeros((len(probs), len(LABELS)), dtype=np.float32)
    y[:, 0] = q >= 2                     # p >= 0.5
    y[:, 1] = (q == 1) | (q == 2)         # 1/3 or 2/3
    y[:, 2] = types == "mono"
    return y


def strata(probs: np.ndarray, types: np.ndarray) -> np.ndarray:
    return np.rint(probs * 3).astype(int) * 2 + (types == "mono").astype(int)


def split_indices(probs: np.ndarray, types: np.ndarray):
    """Deterministic train / val / test index arrays (sorted)."""
    idx = np.arange(len(probs))
    s = strata(probs, types)
    trval, test = train_test_split(idx, test_size=TEST_FRACTION, stratify=s, random_state=SEED)
    train, val = train_test_split(trval, test_size=VAL_FRACTION, stratify=s[trval], random_state=SEED)
    return np.sort(train), np.sort(val), np.sort(test)


def resize_grey(img: Image.Image, size: int) -> np.ndarray:
    img = img.convert("L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def load(size: int, limit: int | None = None):
    """Return dict with images uint8 [N,size,size], y [N,3], probs, types, names, split indices.

    `limit` keeps only the first `limit` images of each split (smoke tests)."""
    names, probs, types = read_labels_csv()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(("\n".join(names) + f"|{size}").encode()).hexdigest()[:12]
    cache = CACHE_DIR / f"elpv_{size}_{key}.npy"
    if cache.exists():
        images = np.load(cache)
    else:
        d = dataset_dir()
        images = np.stack([resize_grey(Image.open(d / n), size) for n in names])
        np.save(cache, images)
    y = multi_hot(probs, types)
    train, val, test = split_indices(probs, types)
    if limit:
        # evenly spaced, so a smoke test still sees every stratum
        train, val, test = (a[:: max(1, len(a) // limit)][:limit] for a in (train, val, test))
    return {
        "images": images,
        "y": y,
        "probs": probs,
        "types": types,
        "names": names,
        "train": train,
        "val": val,
        "test": test,
    }


def norm_stats(images: np.ndarray, train: np.ndarray):
    """Mean and std of train pixels in [0,1], rounded to 4 decimals (what model.toml records)."""
    x = images[train].astype(np.float64) / 255.0
    return round(float(x.mean()), 4), round(float(x.std()), 4)


def label_stats(y: np.ndarray, splits: dict) -> dict:
    """Frequencies and co-occurrence (counts and P(col | row)) per split and overall."""

    def one(ys):
        n = len(ys)
        counts = ys.sum(0)
        co = ys.T @ ys  # co[i, j] = #images with both labels i and j
        cond = np.divide(co, counts[:, None], out=np.zeros_like(co), where=counts[:, None] > 0)
        return {
            "images": int(n),
            "positives": {l: int(c) for l, c in zip(LABELS, counts)},
            "frequency": {l: round(float(c / n), 6) for l, c in zip(LABELS, counts)},
            "cooccurrence_counts": co.astype(int).tolist(),
            "p_col_given_row": np.round(cond, 6).tolist(),
            "label_cardinality": round(float(ys.sum(1).mean()), 6),
        }

    out = {
        "labels": LABELS,
        "note": "cooccurrence_counts[i][j] = images with labels i and j both present; "
        "p_col_given_row[i][j] = P(label j | label i). Label order as in model.toml.",
        "all": one(y),
    }
    for name, idx in splits.items():
        out[name] = one(y[idx])
    return out


def main():
    names, probs, types = read_labels_csv()
    y = multi_hot(probs, types)
    train, val, test = split_indices(probs, types)
    stats = label_stats(y, {"train": train, "val": val, "test": test})
    print(json.dumps({k: stats[k]["positives"] for k in ("all", "train", "val", "test")}, indent=1))
    print(len(train), len(val), len(test))


if __name__ == "__main__":
    main()
