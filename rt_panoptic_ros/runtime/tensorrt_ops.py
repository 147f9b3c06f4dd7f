"""The ONNX operators TensorRT's ONNX parser accepts, and the opset we export at.

An ONNX file that holds any other operator fails in ``trtexec`` or the builder, on the robot,
long after the export looked fine; :func:`rt_panoptic_ros.runtime.export.export_onnx` checks
every export against this list instead, and ``test/test_export.py`` fails on any other op.

Source: the operator support matrix of onnx-tensorrt, ``docs/operators.md`` at the
"ONNX-TensorRT 10.1 GA release" (TensorRT 10.x, opsets 9 to 20), every operator marked ``Y``.
Update it (and :data:`TENSORRT_LIST_VERSION`) from a newer matrix when the robots' TensorRT
moves; operators are only ever added there.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The TensorRT release whose ONNX parser the list below describes.
TENSORRT_LIST_VERSION = "10.1"
#: Opsets that parser accepts (inclusive).
TENSORRT_OPSETS: tuple[int, int] = (9, 20)
#: The opset every export uses: inside :data:`TENSORRT_OPSETS`, and the one the TorchScript
#: exporter of every torch release from 2.0 on writes without a version conversion.
EXPORT_OPSET = 17

TENSORRT_ONNX_OPS: frozenset[str] = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
    CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand
    EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
    GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid
    HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM
    LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool
    MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression
    NonZero Not OneHot Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN RandomNormal
    RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
    Reshape Resize ReverseSequence RoiAlign Round ScaledTanh Scan Scatter ScatterElements
    ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
    SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu
    Unsqueeze Upsample Where Xor
    """.split()
)

#: Resize attributes the parser accepts (the matrix's "Restrictions" column).
TENSORRT_RESIZE_MODES: frozenset[str] = frozenset({"nearest", "linear"})
TENSORRT_RESIZE_COORDINATES: frozenset[str] = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)


def unsupported_ops(op_types: Iterable[str]) -> list[str]:
    """The operator names in ``op_types`` TensorRT's ONNX parser does not accept, sorted."""
    return sorted(set(op_types) - TENSORRT_ONNX_OPS)
