#!/usr/bin/env python3
"""Tune a road-scene bundle to one camera: teacher-label its frames, split them by time, train the
students, quantise, choose thresholds, write the bundle, its card and (with --vigil) `vigil eval`
reports. `models/train/adapt.sh` is the user-facing wrapper; docs/adapt.md explains it.

    road_adapt.py FRAMES_DIR --out BUNDLE [--extras DIR] [--paste] [--eval CSV --vigil BIN]

Steps (WORK = $VIGIL_TRAIN_WORK/adapt-<bundle name>):
  1. views (road_views.build): frames split by time 75/10/15 %, whole frame + crops; extra stills
     (train/val only); with --paste copy-paste composites (traffic lights, rendered stop signs,
     teacher cut-outs). Every view labelled by the teacher (road_teachers.Teacher).
  2. student A, ImageNet MobileNetV2 (road_students.train_mnv2), then student B, the plain CNN
     distilled from A (road_students.train_plain).
  3. labels: a label is shipped only when the training views hold at least MIN_TRAIN_POS positives
     and the validation views at least MIN_VAL_POS (so that its threshold is measured, not guessed);
     the others are cut from the graph and listed in the card with the reason.
  4. exports: B fp32 (BN folded) and B INT8 (common.quantise: QOperator, per-tensor, u8/s8, the
     integer chain tract needs, checked); A fp32 as the comparison (WORK/mnv2.onnx).
  5. thresholds: per label `on` maximises F1 against the teacher's hard labels on the validation
     views (fp32 B), off = on - 0.1.
  6. agreement with the teacher on the test frames (fp32, INT8, A), AP of the pasted labels on the
     test composites, samples + golden scores, model.toml, metrics.json, MODEL_CARD.md; with
     --eval and --vigil: `vigil eval --json --report` for fp32 and INT8 on that labelled set.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import common as C
import road_card
import road_students as S
import road_views as V
import vigil_eval
from road_teachers import BEST, HARD, LABELS, log

MIN_TRAIN_POS = 20
MIN_VAL_POS = 3
THRESHOLD_MARGIN = 0.1
CALIBRATION_IMAGES = 256
SAMPLES = 5


def agreement(soft, p, on, labels_idx) -> dict:
    """Student scores p vs teacher scores soft on the kept labels (columns labels_idx of soft)."""
    y = (soft[:, labels_idx] >= HARD).astype(int)
    s = soft[:, labels_idx]
    aps = [C.average_precision(y[:, j], p[:, j]) for j in range(y.shape[1])]
    pred = (p >= np.asarray(on)).astype(int)
    return {"views": int(len(y)), "teacher_positives": [int(v) for v in y.sum(0)],
            "ap": [None if a != a else round(a, 4) for a in aps],
            "map": round(float(np.nanmean(aps)), 4) if any(a == a for a in aps) else None,
            "mean_abs_score_diff": round(float(np.abs(p - s).mean()), 4),
            "decision_agreement": round(float((pred == y).mean()), 4)}


def scrub(text: str, work: Path) -> str:
    """No path of the build machine in the bundle: the work folder, the repository and the home
    folder become `$VIGIL_TRAIN_WORK/...`, repository-relative and `~` forms."""
    return (text.replace(str(work), f"$VIGIL_TRAIN_WORK/{work.name}").replace(str(C.ROOT) + "/", "")
            .replace(str(Path.home()), "~"))


def choose_labels(d) -> tuple:
    tr_pos = d["y"][d["train"]].sum(0)
    va_pos = d["y"][d["val"]].sum(0)
    keep, dropped = [], {}
    for j, l in enumerate(LABELS):
        if tr_pos[j] < MIN_TRAIN_POS:
            dropped[l] = f"{int(tr_pos[j])} positive training views (< {MIN_TRAIN_POS})"
        elif va_pos[j] < MIN_VAL_POS:
            dropped[l] = f"{int(va_pos[j])} positive validation views (< {MIN_VAL_POS}): no measured threshold"
        else:
            keep.append(j)
    return keep, dropped, tr_pos, va_pos


def cut_head(model: torch.nn.Module, keep: list) -> torch.nn.Module:
    """The exported graph has one logit per shipped label: keep those rows of the final Linear."""
    fc = model[-1] if isinstance(model, torch.nn.Sequential) else model.fc
    new = torch.nn.Linear(fc.in_features, len(keep))
    with torch.no_grad():
        new.weight.copy_(fc.weight[keep])
        new.bias.copy_(fc.bias[keep])
    if isinstance(model, torch.nn.Sequential):
        model[-1] = new
    else:
        model.fc = new
    return model


def run_vigil_eval(vigil: Path, bundle: Path, csv: Path, variant: str, report: Path | None) -> dict:
    """`vigil eval --labels all --json` (vigil_eval.run_eval's command) plus `--report DIR` in the same run."""
    cmd = [str(vigil), "eval", "--model", str(bundle), "--data", str(csv), "--variant", variant, "--json",
           "--labels", "all", "--workers", "1"] + (["--report", str(report)] if report else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return json.loads(r.stdout)


def vigil_eval_all(vigil: Path, bundle: Path, csv: Path, neg_csv: Path | None, variant: str, report: Path | None) -> dict:
    """The eval document, plus `negatives_clean`: the share of the set's negatives (images with none
    of the labels) on which no label switches on = subset accuracy of `vigil eval --labels all` on
    the negatives alone."""
    ev = run_vigil_eval(vigil, bundle, csv, variant, report)
    if neg_csv:
        ev["negatives_clean"] = run_vigil_eval(vigil, bundle, neg_csv, variant, None)["metrics"]["subset_accuracy"]
    return ev


def eval_csv_for(csv: Path, labels: list, out: Path) -> tuple:
    """A copy of a label-list CSV with absolute paths and only `labels` (vigil refuses unknown ones),
    and one of its negatives alone (images with no label at all in the original; None if there are none)."""
    rows, neg = ["path,labels"], ["path,labels"]
    for line in csv.read_text().splitlines():
        if not line or line.startswith("#") or line == "path,labels":
            continue
        p, ls = line.split(",", 1)
        keep = [l for l in ls.split(";") if l in labels]
        rows.append(f"{(csv.parent / p).resolve()},{';'.join(keep)}")
        if not ls.strip():
            neg.append(f"{(csv.parent / p).resolve()},")
    out.write_text("\n".join(rows) + "\n")
    neg_out = out.with_name(out.stem + "-negatives.csv")
    neg_out.write_text("\n".join(neg) + "\n")
    return out, (neg_out if len(neg) > 1 else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("frames", type=Path, help="folder of one camera's frames (JPEG/PNG, names in capture order)")
    ap.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    ap.add_argument("--name", help="bundle name (default: the folder's name)")
    ap.add_argument("--extras", type=Path, help="extra stills for training/validation (road_extras.py)")
    ap.add_argument("--paste", action="store_true", help="add copy-paste composites (traffic lights, stop signs, cut-outs)")
    ap.add_argument("--composites", default="700,120,150", help="composites per train,val,test split")
    ap.add_argument("--eval", type=Path, help="a hand-labelled set (vigil eval label-list CSV) to report on")
    ap.add_argument("--vigil", type=Path, help="the vigil binary for `vigil eval` on --eval (default: vigil_eval.vigil_binary())")
    ap.add_argument("--frames-source", default="the camera the frames were recorded from",
                    help="who owns the frames (samples/LICENSE.md); `vtest` for OpenCV's vtest.avi")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--epochs-mnv2", type=int, default=6)
    ap.add_argument("--epochs-plain", type=int, default=10)
    ap.add_argument("--limit", type=int, default=0, help="smoke test: use only this many frames")
    ap.add_argument("--student", choices=("auto", "plain", "mnv2"), default="auto",
                    help="which student ships (auto: the better validation mAP against the teacher)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the students of an earlier run with the same views and settings (WORK/students.json)")
    a = ap.parse_args()
    a.out = a.out.resolve()
    a.eval = a.eval.resolve() if a.eval else None
    t_start = time.time()
    name = a.name or a.out.resolve().name
    work = C.WORK / f"adapt-{name}"
    work.mkdir(parents=True, exist_ok=True)
    frames = a.frames
    if a.limit:  # a temporary folder with an even spread of the frames
        frames = work / "frames-limit"
        shutil.rmtree(frames, ignore_errors=True)
        frames.mkdir()
        fs = V.list_images(a.frames)
        for p in [fs[i] for i in np.linspace(0, len(fs) - 1, a.limit).round().astype(int)]:
            (frames / p.name).symlink_to(p.resolve())
    comp = dict(zip(("train", "val", "test"), (int(v) for v in a.composites.split(","))))

    # 1. views
    t0 = time.time()
    d = V.build(frames, a.extras, a.paste, a.size, comp)
    t_views = time.time() - t0
    tr, va, te = d["train"], d["val"], d["test"]
    log(f"views: train {len(tr)}, val {len(va)}, test {len(te)} ({t_views:.0f}s)")
    mean, std = V.norm_stats(d["images"], tr)
    x = V.normalise(d["images"], mean, std)

    # 2. students (or, with --reuse, the checkpoints of an earlier run on the same views and settings)
    key = V._key(d["images"].shape, float(d["soft"].sum()), a.epochs_mnv2, a.epochs_plain, S.FROZEN, S.PLAIN)
    saved = work / "students.json"
    if a.reuse and saved.exists() and json.loads(saved.read_text())["key"] == key:
        prev = json.loads(saved.read_text())
        A = S.MobileNetV2Road(mean, std)
        A.load_state_dict(torch.load(work / "mnv2.pt", weights_only=True))
        B = C.Student(len(LABELS), in_ch=3, **S.PLAIN)
        B.load_state_dict(torch.load(work / "plain.pt", weights_only=True))
        A.eval(), B.eval()
        hist_a, hist_b, t_a, t_b = prev["hist_a"], prev["hist_b"], prev["seconds_a"], prev["seconds_b"]
        log(f"students reused from {work} (trained in {t_a + t_b}s)")
    else:
        t0 = time.time()
        A, hist_a, h = S.train_mnv2(d, x, mean, std, epochs=a.epochs_mnv2, ckpt=work / "mnv2.pt")
        za0, fa0 = S.top_outputs(A, h[0])
        za1, fa1 = S.top_outputs(A, h[1])
        del h
        t_a = time.time() - t0
        t0 = time.time()
        B, hist_b = S.train_plain(d, x, np.stack([za0, za1]), np.stack([fa0, fa1]), epochs=a.epochs_plain,
                                  ckpt=work / "plain.pt")
        t_b = time.time() - t0
        C.write_json(saved, {"key": key, "hist_a": hist_a, "hist_b": hist_b, "seconds_a": round(t_a), "seconds_b": round(t_b)})

    # 3. labels
    keep, dropped, tr_pos, va_pos = choose_labels(d)
    labels = [LABELS[j] for j in keep]
    log("labels shipped:", labels, "dropped:", dropped)
    if not keep:
        raise SystemExit("no label has enough teacher positives in these frames to train and threshold it")

    # 4. exports: both students as bundles in WORK; the shipped one is copied to --out
    pb, mb = work / "plain-bundle", work / "mnv2-bundle"
    for b in (pb, mb):
        shutil.rmtree(b, ignore_errors=True)
        b.mkdir(parents=True)
    fp32, int8 = pb / "model.onnx", pb / "model.int8.onnx"
    f = cut_head(C.fused(B), keep)
    C.export_onnx(f, a.size, work / "plain.onnx", len(keep), in_ch=3)
    zt = {k: C.predict(f, x[idx]) for k, idx in (("val", va), ("test", te))}
    np.savez(work / "plain_logits.npz", **zt)
    ops, s32, s8, z32, z8, torch_ort = C.quantise_and_score(work / "plain.onnx", fp32, int8, x, tr, va, te,
                                                            work / "plain_logits.npz", CALIBRATION_IMAGES)
    A.m.net.classifier[1] = cut_head(torch.nn.Sequential(A.m.net.classifier[1]), keep)[0]
    S.export_mnv2(A, a.size, mb / "model.onnx")
    sa = C.session(mb / "model.onnx")
    za = {"val": C.run(sa, x[va]), "test": C.run(sa, x[te])}

    # 5. thresholds (validation, fp32 B; A gets its own for the comparison)
    yv = d["y"][va][:, keep]
    on = [C.best_threshold(yv[:, j], C.sigmoid(z32["val"])[:, j]) for j in range(len(keep))]
    off = [round(max(0.01, o - THRESHOLD_MARGIN), 2) for o in on]
    on_a = [C.best_threshold(yv[:, j], C.sigmoid(za["val"])[:, j]) for j in range(len(keep))]
    log("thresholds:", dict(zip(labels, on)))

    # 6. agreement on the test frames and composites
    soft_te = d["soft"][te]
    frames_te = d["group"][te] == "frame"
    comp_te = d["group"][te] == "composite"
    res = {}
    for k, z, o in (("plain_fp32", z32, on), ("plain_int8", z8, on), ("mnv2_fp32", za, on_a)):
        p = C.sigmoid(z["test"])
        res[k] = {"test_frames": agreement(soft_te[frames_te], p[frames_te], o, keep),
                  "test_whole_frames": agreement(soft_te[d["whole"][te]], p[d["whole"][te]], o, keep)}
        if comp_te.any():
            kn = d["known"][te][comp_te][:, keep]
            res[k]["test_composites_pasted_ap"] = [
                round(C.average_precision(kn[:, j], p[comp_te][:, j]), 4) if kn[:, j].sum() else None
                for j in range(len(keep))]
        log(k, json.dumps(res[k]))
    d_map = (res["plain_int8"]["test_frames"]["map"] or 0) - (res["plain_fp32"]["test_frames"]["map"] or 0)

    # which student ships: the better validation mAP against the teacher (never the eval set)
    val_map = {"plain": S._val_map(yv, C.sigmoid(z32["val"]))[0], "mnv2": S._val_map(yv, C.sigmoid(za["val"]))[0]}
    ship = a.student if a.student != "auto" else max(val_map, key=val_map.get)
    log(f"validation mAP vs the teacher: {val_map}; shipping {ship}")
    off_a = [round(max(0.01, o - THRESHOLD_MARGIN), 2) for o in on_a]
    road_card.write_samples(pb, d, keep, labels, te, mean, std, a.size, s32, s8, int8, frames_te, name)
    road_card.write_samples(mb, d, keep, labels, te, mean, std, a.size, sa, None, None, frames_te, name)
    for b in (pb, mb):
        road_card.write_samples_licence(b, a.frames_source, a.size)
    road_card.write_manifest(pb, name, labels, a.size, mean, std, on, off, C.macs(f, a.size))
    road_card.write_manifest(mb, name, labels, a.size, mean, std, on_a, off_a, S.mnv2_macs(a.size), int8=False)
    a.out.mkdir(parents=True, exist_ok=True)
    for old in ("model.onnx", "model.int8.onnx", "model.toml", "samples"):
        q = a.out / old
        shutil.rmtree(q) if q.is_dir() else q.unlink(missing_ok=True)
    src = pb if ship == "plain" else mb
    for q in src.iterdir():
        (shutil.copytree if q.is_dir() else shutil.copyfile)(q, a.out / q.name)
    sizes = {"plain model.onnx": fp32.stat().st_size, "plain model.int8.onnx": int8.stat().st_size,
             "MobileNetV2 model.onnx": (mb / "model.onnx").stat().st_size}
    m = {
        "name": name, "frames_dir": frames.name, "size": a.size, "mean": mean, "std": std,
        "teacher": {"combination": BEST, "hard_threshold": HARD},
        "views": {k: int(len(v)) for k, v in (("train", tr), ("val", va), ("test", te))},
        "views_by_group": {s: {g: int(((d["split"] == s) & (d["group"] == g)).sum()) for g in ("frame", "extra", "composite")}
                           for s in ("train", "val", "test")},
        "frames": {s: [str(d["source"][idx][d["group"][idx] == "frame"][0]), str(d["source"][idx][d["group"][idx] == "frame"][-1])]
                   for s, idx in (("train", tr), ("val", va), ("test", te))},
        "labels": labels, "dropped_labels": dropped, "shipped": ship,
        "val_map_vs_teacher": {k: round(v, 4) for k, v in val_map.items()},
        "train_positives": {l: int(v) for l, v in zip(LABELS, tr_pos)},
        "val_positives": {l: int(v) for l, v in zip(LABELS, va_pos)},
        "thresholds": {l: {"on": o, "off": f_} for l, o, f_ in zip(labels, on, off)},
        "mnv2_thresholds": {l: {"on": o, "off": f_} for l, o, f_ in zip(labels, on_a, off_a)},
        "results": res, "int8_minus_fp32_map_points": round(100 * d_map, 2),
        "int8_fp32_decision_agreement": round(float(((C.sigmoid(z8["test"]) >= on) == (C.sigmoid(z32["test"]) >= on)).mean()), 4),
        "torch_vs_onnxruntime_fp32_max_logit_diff": torch_ort, "int8_ops": ops, "sizes_bytes": sizes,
        "plain": {**S.PLAIN, "macs": C.macs(f, a.size), "params": sum(q.numel() for q in f.parameters()),
                  "history": hist_b},
        "mnv2": {"frozen_blocks": S.FROZEN, "macs": S.mnv2_macs(a.size), "history": hist_a},
        "seconds": {"views": round(t_views), "mnv2": round(t_a), "plain": round(t_b)},
    }
    vigil = a.vigil or vigil_eval.vigil_binary()
    if a.eval and not vigil:
        log("no vigil binary (cargo build --release, or --vigil / VIGIL_BIN): skipping `vigil eval`")
    if a.eval and vigil:
        csv, neg = eval_csv_for(a.eval, labels, work / "eval.csv")
        m["eval"] = {"set": str(a.eval), "labels": labels}
        reports = a.out / "eval-report"
        shutil.rmtree(reports, ignore_errors=True)
        for key_, b, variant in (("fp32", pb, "fp32"), ("int8", pb, "int8"), ("mnv2_fp32", mb, "fp32")):
            shipped = (b is pb) == (ship == "plain")
            m["eval"][key_] = vigil_eval_all(vigil, b, csv, neg, variant, (reports / variant) if shipped else None)
            log(f"vigil eval {key_}:", json.dumps(m["eval"][key_]["metrics"])[:300])
    m["seconds"]["total"] = round(time.time() - t_start)
    C.write_json(a.out / "metrics.json", m)
    for f_ in [a.out / "metrics.json", *sorted((a.out / "eval-report").rglob("*.*"))]:
        f_.write_text(scrub(f_.read_text(encoding="utf-8"), work), encoding="utf-8")
    road_card.write_card(a.out, m)
    log(f"bundle {a.out} written in {m['seconds']['total']}s")


if __name__ == "__main__":
    sys.exit(main())
