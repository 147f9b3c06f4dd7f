"""Precision lives in the ONNX graph: fp16 conversion, int8 Q/DQ quantisation, and reading it back.

TensorRT 11 builds strongly typed networks only (no FP16 / INT8 builder flags, no
calibrators), and TensorRT 10 does the same with its ``STRONGLY_TYPED`` flag: each layer runs
in the type its ONNX tensors have. So one file format serves both, and ONNX Runtime runs the
very same files on the CPU:

- ``fp32``: the export as it is.
- ``fp16``: weights and activations in float16 (onnxconverter-common's converter, the one
  ModelOpt's AutoCast builds on), except what is numerically sensitive, which stays float32
  behind explicit casts: GroupNorm's statistics (``InstanceNormalization``), the input's
  normalisation up to the first convolution, and everything after each output's last
  convolution (``box_reg``'s ``exp``, which overflows float16 past e^11). Inputs and outputs
  keep their types (uint8 in, float32 out), so the decoder never sees float16.
- ``int8``: explicit ``QuantizeLinear`` / ``DequantizeLinear`` pairs around every convolution
  (ONNX Runtime's static QDQ quantiser, the one ModelOpt's ONNX PTQ drives): weights int8
  symmetric per output channel, activations int8 symmetric per tensor (zero point 0, what
  TensorRT accepts), scales calibrated on images (min-max). Biases and every other op stay
  float32.

ONNX Runtime on x86 only fuses Q/DQ convolutions into integer kernels when activations are
uint8; :func:`int8_for_cpu` re-expresses the int8 activations as uint8 with zero point 128
(the same numbers) for it. Why ModelOpt itself is not a dependency: ``nvidia-modelopt[onnx]``
pins an older onnx, replaces onnxruntime with onnxruntime-gpu and pulls in cupy; the two
libraries it would call for us are called here directly (docs/deployment.md).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from rt_panoptic_ros.errors import ConfigError, ExportError

GRAPH_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
#: Op types that stay float32 in an fp16 graph (see the module docstring).
FP32_OPS: tuple[str, ...] = ("InstanceNormalization", "Exp")
#: Op types an int8 graph quantises (weights and inputs).
INT8_OPS: tuple[str, ...] = ("Conv",)
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def check_precision(precision: str) -> str:
    if precision not in GRAPH_PRECISIONS:
        raise ConfigError(f"precision: {precision!r}, expected one of {', '.join(GRAPH_PRECISIONS)}")
    return precision


def graph_precision(proto: onnx.ModelProto) -> str:
    """``int8`` if the graph holds Q/DQ nodes, ``fp16`` if it holds float16 tensors, else ``fp32``."""
    if any(n.op_type in _QDQ for n in proto.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return "fp16"
    return "fp32"


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """An fp16 copy of an fp32 export (module docstring says what stays float32)."""
    from onnxconverter_common.float16 import convert_float_to_float16

    keep = sorted(_input_stem(proto) | _output_tails(proto))
    with warnings.catch_warnings():
        # The converter warns for every weight below fp16's smallest normal number that it
        # rounds to 1e-7 (hundreds of lines for a trained model); that rounding is intended.
        warnings.simplefilter("ignore", UserWarning)
        converted = convert_float_to_float16(
            proto, keep_io_types=True, op_block_list=list(FP32_OPS), node_block_list=keep
        )
    # Behind a node it keeps in float32 (``box_reg``'s Exp) the converter casts to float16 and
    # declares the graph output float16, keep_io_types or not: cast to float32 there instead.
    producer = {out: node for node in converted.graph.node for out in node.output}
    for output in converted.graph.output:
        node = producer.get(output.name)
        if node is not None and node.op_type == "Cast":
            for attribute in node.attribute:
                if attribute.name == "to":
                    attribute.i = onnx.TensorProto.FLOAT
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return converted


def _input_stem(proto: onnx.ModelProto) -> set[str]:
    """Names of the nodes between the graph input and the first convolution (normalisation)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    stem, frontier = set(), [i.name for i in proto.graph.input]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.op_type != "Conv" and node.name not in stem:
                stem.add(node.name)
                frontier.extend(node.output)
    return stem


def _output_tails(proto: onnx.ModelProto) -> set[str]:
    """Names of the nodes between each output's last convolution and the output."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    tails, frontier = set(), [o.name for o in proto.graph.output]
    while frontier:
        node = producer.get(frontier.pop())
        if node is not None and node.op_type != "Conv" and node.name not in tails:
            tails.add(node.name)
            frontier.extend(node.input)
    return tails


def quantize_int8(
    proto: onnx.ModelProto,
    batches: Iterable[np.ndarray],
    input_name: str,
    progress: Callable[[str], None] | None = None,
) -> onnx.ModelProto:
    """An int8 Q/DQ copy of an fp32 export, its activation ranges calibrated on ``batches``.

    Args:
        batches: uint8 ``[N, 3, H, W]`` arrays fitting the graph's input.
        input_name: the graph's input.

    Raises:
        ExportError: no calibration batch.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches, self.count = iter(batches), 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.count += 1
            if progress and self.count % 8 == 0:
                progress(f"  calibrated on {self.count} batches")
            return {input_name: batch}

    reader = Reader()
    with tempfile.TemporaryDirectory(prefix="rt_panoptic_int8_") as tmp:
        fp32, prepared, quantized = (Path(tmp) / n for n in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(proto, fp32)
        # Shape inference and ORT's basic graph clean-up, as ORT's quantisation guide asks.
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(INT8_OPS), per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # Biases stay float32: TensorRT adds them in float inside its int8 convolutions and
            # has no int32 DequantizeLinear; ORT fuses Q/DQ convolutions with a float bias too.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )  # fmt: skip
        if reader.count == 0:
            raise ExportError("int8: no calibration batch (give --calibration-dir a folder of images)")
        result = onnx.load(str(quantized))
    if progress:
        progress(f"  quantised to int8 on {reader.count} calibration batches")
    return result


def int8_for_cpu(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The same int8 graph with activations as uint8 (zero point 128) for ONNX Runtime on x86.

    Only zero points that a ``QuantizeLinear`` uses (activations) change: ``q_u8 = q_s8 + 128``
    over the same scale, so every dequantised value is the same number. Weights (int8
    initializers read by ``DequantizeLinear`` alone) stay int8: ORT's u8s8 kernels.
    """
    activation_zero_points = {
        n.input[2] for n in proto.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
    }
    converted = onnx.ModelProto()
    converted.CopyFrom(proto)
    for k, tensor in enumerate(converted.graph.initializer):
        if tensor.name in activation_zero_points and tensor.data_type == onnx.TensorProto.INT8:
            shifted = numpy_helper.to_array(tensor).astype(np.int16) + 128
            converted.graph.initializer[k].CopyFrom(
                numpy_helper.from_array(shifted.astype(np.uint8), tensor.name)
            )
    return converted
