"""The one INT8 step every bundle goes through (elpv-solar, road-scene, mobilenetv2-imagenet).

A bundle carries up to two INT8 files of the same fp32 graph, because each engine is fast on
only one way of writing INT8 in ONNX:

  model.int8.onnx      QOperator form (QLinearConv chains, per-tensor scales): tract's integer
                       path. Manifest key `model_int8`.
  model.int8.qdq.onnx  QDQ form (QuantizeLinear/DequantizeLinear around float operators, weights
                       per output channel, every operator quantised): ONNX Runtime fuses each
                       pair into an integer kernel, depthwise convolutions and residual adds
                       included, and TensorRT / QNN / OpenVINO take INT8 only in this form.
                       Manifest key `model_int8_qdq`.

Both use MinMax calibration on the caller's inputs, u8 activations and s8 weights with
reduce_range (7-bit weights): every u8*s8 pair sum fits int16, so onnxruntime's AVX2 (non-VNNI)
kernels cannot saturate and its results equal exact integer arithmetic on any x86 CPU.
Needs only onnx, onnxruntime and numpy (no torch), so a bundle's INT8 files can be rewritten
without its training run.
"""

from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

QDQ_FILE = "model.int8.qdq.onnx"


class Reader(CalibrationDataReader):
    """Feeds calibration inputs, one [1, C, H, W] f32 tensor at a time, to the graph input `name`."""

    def __init__(self, tensors, name="input"):
        self._it = iter(tensors)
        self._name = name

    def get_next(self):
        x = next(self._it, None)
        if x is None:
            return None
        x = np.asarray(x, dtype=np.float32)
        return {self._name: x if x.ndim == 4 else x[None]}


def _standard_ops_only(path: Path) -> onnx.ModelProto:
    """Refuse contrib ops; drop a com.microsoft opset declaration the quantiser may add although
    no contrib op is used, so strict loaders (tract) only see ai.onnx. Returns the checked model."""
    m = onnx.load(str(path))
    bad = sorted({n.op_type for n in m.graph.node if n.domain not in ("", "ai.onnx")})
    if bad:
        raise SystemExit(f"{path}: INT8 graph has non-standard ops: {bad}")
    keep = [o for o in m.opset_import if o.domain in ("", "ai.onnx")]
    if len(keep) != len(m.opset_import):
        del m.opset_import[:]
        m.opset_import.extend(keep)
        onnx.save(m, str(path))
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    return m


def op_counts(m: onnx.ModelProto) -> dict:
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return dict(sorted(ops.items()))


def write_qoperator(fp32: Path, out: Path, calib, *, op_types, exclude=()) -> onnx.ModelProto:
    """tract's INT8 form: per-tensor QOperator on `op_types`, nodes in `exclude` left float."""
    quantize_static(
        str(fp32), str(out), Reader(calib),
        quant_format=QuantFormat.QOperator,
        per_channel=False,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(op_types),
        nodes_to_exclude=list(exclude),
        calibrate_method=CalibrationMethod.MinMax,
    )
    return _standard_ops_only(out)


def write_qdq(fp32: Path, out: Path, calib) -> onnx.ModelProto:
    """ONNX Runtime's INT8 form: QDQ, every quantisable operator, weights per output channel."""
    quantize_static(
        str(fp32), str(out), Reader(calib),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    m = _standard_ops_only(out)
    ops = op_counts(m)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0, f"{out}: no QDQ pairs: {ops}"
    assert not any(k.startswith("QLinear") for k in ops), f"{out}: QOperator nodes in a QDQ graph: {ops}"
    return m
