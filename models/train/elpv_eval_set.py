#!/usr/bin/env python3
"""Write an elpv split as a `vigil eval` set, so the daemon's own decoding, resize and thresholds
score exactly the images the model card reports.

    ~/.cache/vigil-py/bin/python models/train/elpv_eval_set.py --out /tmp/elpv-test
    vigil eval --model models/elpv-solar --variant int8 --data /tmp/elpv-test/test.csv

The CSV (0/1 columns: defective, uncertain, monocrystalline; docs/eval.md) names the dataset's
original 300x300 PNGs inside the installed elpv-dataset package by absolute path: the images are
CC-BY-NC-SA-4.0 and 40 MB, so they are not copied into the repository. The split is
elpv_data.split_indices, the one every build uses (the paper's stratified 75/25 protocol).
"""

import argparse
from pathlib import Path

import bundle_files as F
import elpv_data as D


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for SPLIT.csv")
    ap.add_argument("--split", choices=["train", "val", "test"], default="test")
    a = ap.parse_args()
    names, probs, types = D.read_labels_csv()
    y = D.multi_hot(probs, types)
    split = dict(zip(("train", "val", "test"), D.split_indices(probs, types)))[a.split]
    images = D.dataset_dir()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"{a.split}.csv"
    F.write_eval_csv(csv, [((images / names[i]).resolve(), y[i]) for i in split], D.LABELS)
    print(f"{csv}: {len(split)} images of the {a.split} split")


if __name__ == "__main__":
    main()
