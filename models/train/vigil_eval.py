"""Run the daemon's own evaluator (`vigil eval --json`, docs/eval.md) on a labelled set, so that a
model card's figures can be checked against what a user gets: the same image files, the daemon's
decoding, resize and normalisation, tract instead of onnxruntime, the manifest's thresholds.

The binary: $VIGIL_BIN, else $CARGO_TARGET_DIR/release/vigil, else ~/.cache/vigil-target/release/vigil,
else target/release/vigil in the repository (build it with `cargo build --release`).
"""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def vigil_binary() -> Path | None:
    """The vigil binary to run, or None when none is built."""
    cands = []
    if os.environ.get("VIGIL_BIN"):
        cands.append(Path(os.environ["VIGIL_BIN"]))
    if os.environ.get("CARGO_TARGET_DIR"):
        cands.append(Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "vigil")
    cands += [Path.home() / ".cache" / "vigil-target" / "release" / "vigil", ROOT / "target" / "release" / "vigil"]
    return next((c for c in cands if c.is_file() and os.access(c, os.X_OK)), None)


def run_eval(bundle: Path, data: Path, variant: str = "fp32", labels: str = "all", workers: int | None = None,
             binary: Path | None = None) -> dict:
    """`vigil eval --json` of `bundle` (variant fp32 or int8) on the set `data` (CSV or directory);
    returns the parsed JSON (keys timing, labels, metrics, ...). Raises on a non-zero exit."""
    binary = binary or vigil_binary()
    if binary is None:
        raise FileNotFoundError("no vigil binary: run `cargo build --release` or set VIGIL_BIN")
    cmd = [str(binary), "eval", "--model", str(bundle), "--data", str(data), "--variant", variant,
           "--labels", labels, "--json"]
    if workers:
        cmd += ["--workers", str(workers)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def label_summary(result: dict, label: str) -> dict:
    """One label's counts and scores from a `run_eval` result, with accuracy = (tp + tn) / images."""
    m = result["metrics"]
    row = next(r for r in m["labels"] if r["label"] == label)
    c = row["counts"]
    n = c["tp"] + c["fp"] + c["fn"] + c["tn"]
    return {"accuracy": (c["tp"] + c["tn"]) / n, "ap": row["ap"], "f1": row["f1"], "on": row["on"], **c}
