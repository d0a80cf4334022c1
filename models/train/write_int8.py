#!/usr/bin/env python3
"""Rewrite a shipped bundle's INT8 files from its committed fp32 model, without its training run.

    ~/.cache/vigil-py/bin/python models/train/write_int8.py elpv-solar
    ~/.cache/vigil-py/bin/python models/train/write_int8.py mobilenetv2-imagenet

Each bundle is calibrated on exactly the inputs its build used (elpv-solar: the 256 training
images bundle_elpv.py picks; mobilenetv2-imagenet: export_mobilenetv2.py's sample views), so the
files written here are the ones a full rebuild writes. The QOperator file (`model_int8`) is
rewritten too and must come out byte for byte as committed: that is the check that the
calibration inputs are the build's own. The QDQ file (`model_int8_qdq`) is what ONNX Runtime
runs (quantise.py says why there are two).
"""

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import quantise as Q

ROOT = Path(__file__).resolve().parents[2]


def elpv_calibration(bundle: Path):
    import tomllib

    import common as C
    import elpv_data as D
    from bundle_elpv import CALIBRATION_IMAGES

    m = tomllib.loads((bundle / "model.toml").read_text())
    size = m["input"]["width"]
    d = D.load(size)
    x = C.normalise(d["images"], m["input"]["mean"][0], m["input"]["std"][0])
    return x[C.calibration_indices(d["train"], CALIBRATION_IMAGES)], ["Conv", "Relu", "MaxPool"], []


def mobilenetv2_calibration(bundle: Path):
    sys.path.insert(0, str(ROOT / "models" / "export"))
    import export_mobilenetv2 as E

    return E.calibration_batches(), ["Conv"], E.depthwise_conv_names(bundle / "model.onnx")


CALIBRATION = {"elpv-solar": elpv_calibration, "mobilenetv2-imagenet": mobilenetv2_calibration}


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", choices=sorted(CALIBRATION))
    a = ap.parse_args()
    bundle = ROOT / "models" / a.bundle
    calib, op_types, exclude = CALIBRATION[a.bundle](bundle)
    fp32 = bundle / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        again = Path(tmp) / "model.int8.onnx"
        Q.write_qoperator(fp32, again, calib, op_types=op_types, exclude=exclude)
        if sha(again) != sha(bundle / "model.int8.onnx"):
            sys.exit(f"{a.bundle}: the QOperator file written from these calibration inputs differs from "
                     "the committed model.int8.onnx: they are not the build's inputs")
    qdq = bundle / Q.QDQ_FILE
    m = Q.write_qdq(fp32, qdq, calib)
    print(f"{a.bundle}: model.int8.onnx reproduced byte for byte; {qdq.name} {qdq.stat().st_size} bytes, "
          f"ops {Q.op_counts(m)}")


if __name__ == "__main__":
    main()
