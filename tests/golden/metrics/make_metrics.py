#!/usr/bin/env python3
"""Reference numbers for vigil's multi-label metrics, computed with scikit-learn.

Writes, next to this script:
  labels.csv   path + one 0/1 column per label (ground truth; vigil's 0/1-column set format)
  scores.csv   path + one score column per label (what a model would output)
  sklearn.json thresholds, sklearn's numbers for that set, and small edge cases with inline inputs

Run from anywhere:  python3 make_metrics.py   (numpy, scikit-learn; versions recorded in the JSON)

Every score is a multiple of 1/4096, so it is exact in float32 and float64 and prints exactly:
vigil (f32) and numpy (f64) see the same values, the same ties and the same `score >= on`
decisions. Thresholds are multiples of 1/8 for the same reason.
"""

import csv
import json
import os
import warnings

import numpy as np
import sklearn
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
)

HERE = os.path.dirname(os.path.abspath(__file__))
Q = 4096  # score quantum: scores are k / Q


def quantise(x):
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * Q), 0, Q) / Q


def sklearn_numbers(y, s, on):
    """Everything vigil reports, as scikit-learn computes it (zero_division=0 throughout)."""
    y = np.asarray(y, dtype=int)
    s = np.asarray(s, dtype=np.float64)
    on = np.asarray(on, dtype=np.float64)
    pred = (s >= on).astype(int)
    n, k = y.shape
    support = y.sum(axis=0)
    with warnings.catch_warnings():
        # A label with no positives makes sklearn warn (and give AP 0); vigil reports null instead.
        warnings.simplefilter("ignore")
        ap_all = [float(average_precision_score(y[:, j], s[:, j])) for j in range(k)]
    with_pos = [j for j in range(k) if support[j] > 0]
    ap = [ap_all[j] if support[j] > 0 else None for j in range(k)]
    mean_ap = float(average_precision_score(y[:, with_pos], s[:, with_pos], average="macro")) if with_pos else None
    p, r, f, sup = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    out = {
        "ap": ap,
        "ap_sklearn_raw": ap_all,
        "map": mean_ap,
        "map_labels": len(with_pos),
        "precision": p.tolist(),
        "recall": r.tolist(),
        "f1": f.tolist(),
        "support": sup.tolist(),
        "micro_precision": float(precision_score(y, pred, average="micro", zero_division=0)),
        "micro_recall": float(recall_score(y, pred, average="micro", zero_division=0)),
        "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_precision": float(precision_score(y, pred, average="macro", zero_division=0)),
        "macro_recall": float(recall_score(y, pred, average="macro", zero_division=0)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(y, pred, average="samples", zero_division=0)),
        "hamming_loss": float(hamming_loss(y, pred)),
        "subset_accuracy": float(accuracy_score(y, pred)),
        "cooccurrence": (y.T @ y).tolist(),
    }
    return out


def main_set():
    """60 images, 7 labels, each label built to exercise one thing."""
    rng = np.random.default_rng(20240611)
    n = 60
    labels = ["person", "car", "rare bird", "never", "silent", "tied", "at threshold"]
    y = np.zeros((n, len(labels)), dtype=int)
    s = np.zeros((n, len(labels)))
    # person: common, informative scores with overlap between classes.
    y[:, 0] = rng.random(n) < 0.45
    s[:, 0] = np.clip(0.35 + 0.3 * (y[:, 0] * 2 - 1) * rng.random(n) + 0.2 * rng.standard_normal(n), 0, 1)
    # car: correlated with person (co-occurrence), noisier scores.
    y[:, 1] = (rng.random(n) < 0.3) | (y[:, 0].astype(bool) & (rng.random(n) < 0.4))
    s[:, 1] = np.clip(0.3 + 0.25 * y[:, 1] + 0.25 * rng.standard_normal(n), 0, 1)
    # rare bird: 3 positives, one of them scored below many negatives.
    pos = rng.choice(n, 3, replace=False)
    y[pos, 2] = 1
    s[:, 2] = rng.random(n) * 0.5
    s[pos, 2] = [0.9, 0.6, 0.1]
    # never: no positives at all, but scores (false alarms) anyway.
    s[:, 3] = rng.random(n) * 0.7
    # silent: positives, but the model scores every image 0 (all-zero predictions, one big tie).
    y[:, 4] = rng.random(n) < 0.2
    s[:, 4] = 0.0
    # tied: scores on a coarse grid (5 values), many ties across positives and negatives.
    y[:, 5] = rng.random(n) < 0.5
    s[:, 5] = np.clip(np.round((0.5 * y[:, 5] + rng.random(n) * 0.6) * 4) / 4, 0, 1)
    # at threshold: many scores exactly equal to the threshold (0.5): `>=` counts them.
    y[:, 6] = rng.random(n) < 0.35
    s[:, 6] = np.where(rng.random(n) < 0.5, 0.5, rng.random(n))
    # A few images with no labels at all, and one whose predictions are all empty.
    y[:4, :] = 0
    s = quantise(s)
    on = [0.5, 0.375, 0.25, 0.5, 0.5, 0.5, 0.5]
    paths = [f"img/{i:03d}.jpg" for i in range(n)]
    return labels, paths, y, s, on


def edge_cases():
    cases = []
    # All-zero predictions: every score 0, so nothing reaches any threshold; AP is the prevalence.
    y = [[1, 0], [0, 1], [1, 1], [0, 0]]
    s = [[0, 0], [0, 0], [0, 0], [0, 0]]
    cases.append(("all_zero_predictions", ["a", "b"], y, s, [0.5, 0.5]))
    # Ties: positives and negatives share scores; thresholds sit on the tied values.
    y = [[1, 0], [0, 1], [1, 0], [0, 0], [1, 1], [0, 1]]
    s = [[0.5, 0.25], [0.5, 0.25], [0.25, 0.75], [0.25, 0.75], [0.75, 0.25], [0.5, 0.75]]
    cases.append(("ties", ["a", "b"], y, s, [0.5, 0.25]))
    # A label with no positives and no predictions next to a perfect one (macro F1 counts it as 0).
    y = [[1, 0], [0, 0], [1, 0]]
    s = [[0.875, 0.125], [0.125, 0.25], [0.75, 0.0]]
    cases.append(("no_positives_label", ["seen", "unseen"], y, s, [0.5, 0.5]))
    # Every image empty (no truth, no prediction): samples-F1 and macro F1 are 0 under zero_division=0.
    y = [[0, 0], [0, 0]]
    s = [[0.125, 0.25], [0.0, 0.375]]
    cases.append(("nothing_anywhere", ["a", "b"], y, s, [0.5, 0.5]))
    out = []
    for name, labels, y, s, on in cases:
        s = quantise(s)
        out.append({
            "name": name,
            "labels": labels,
            "y_true": y,
            "y_score": s.tolist(),
            "thresholds": on,
            "expected": sklearn_numbers(y, s, on),
        })
    return out


def fmt(x):
    # Exact decimal of a multiple of 1/4096 (at most 12 decimals), trailing zeros dropped.
    return f"{x:.12f}".rstrip("0").rstrip(".") if x != 0 else "0"


def main():
    labels, paths, y, s, on = main_set()
    with open(os.path.join(HERE, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path"] + labels)
        for p, row in zip(paths, y):
            w.writerow([p] + [int(v) for v in row])
    with open(os.path.join(HERE, "scores.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path"] + labels)
        for p, row in zip(paths, s):
            w.writerow([p] + [fmt(v) for v in row])
    result = {
        "generated_by": "make_metrics.py",
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
        "notes": (
            "zero_division=0 everywhere; `ap` is null for a label with no positives (sklearn gives 0 with a "
            "warning, kept as `ap_sklearn_raw`); `map` averages AP over labels with at least one positive."
        ),
        "labels": labels,
        "thresholds": on,
        "expected": sklearn_numbers(y, s, on),
        "edge_cases": edge_cases(),
    }
    with open(os.path.join(HERE, "sklearn.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
