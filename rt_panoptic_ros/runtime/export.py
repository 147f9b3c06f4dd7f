"""ONNX export of :class:`~rt_panoptic_ros.model.RTPanoNet`, checked for TensorRT.

The graph takes ``image``: uint8 ``[N, 3, H, W]`` RGB (normalisation is inside the network,
so every backend takes the camera's pixels) and gives 17 float32 outputs named after
:class:`~rt_panoptic_ros.model.HeadOutputs`, levels by stride 8..128::

    semantic_logits   [N, C, H/8, W/8]       levelness_logits  [N, 6, H/4, W/4]
    box_cls_i         [N, C_th, H/s, W/s]    box_reg_i         [N, 4, H/s, W/s]
    centerness_i      [N, 1, H/s, W/s]       (i = 0..4, s = 8, 16, 32, 64, 128)

Every export passes ``onnx.checker`` (full check), strict shape inference, a comparison of
its output shapes with the ones above, and the TensorRT operator list
(:mod:`~rt_panoptic_ros.runtime.tensorrt_ops`). The model's config travels in the file's
metadata (``rt_panoptic_ros.config``), so an exported file is as self-describing as the
model file it came from.

Precision is part of the graph (``precision="fp16"`` / ``"int8"``, see
:mod:`~rt_panoptic_ros.runtime.precision`), recorded in the metadata too
(``rt_panoptic_ros.precision``, and for int8 the calibration images' fingerprint).

The exporter is torch's TorchScript-based one (``dynamo=False``): on this network it gives a
plain graph of Conv / InstanceNormalization / Resize / elementwise ops in under a second
for the small model, at opset 17 without version conversion, on every torch release from
2.0 on (the torch.export-based one needs opset 18 and converts down).
"""

from __future__ import annotations

import collections
import io
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from rt_panoptic_ros.config import FPN_STRIDES, SIZE_DIVISIBILITY, Config
from rt_panoptic_ros.errors import ConfigError, ExportError
from rt_panoptic_ros.model import HeadOutputs, RTPanoNet, fold_frozen_batchnorm
from rt_panoptic_ros.runtime.calibration import (
    calibration_batches,
    calibration_fingerprint,
    calibration_images,
)
from rt_panoptic_ros.runtime.files import atomic_write_bytes
from rt_panoptic_ros.runtime.precision import check_precision, quantize_int8, to_fp16
from rt_panoptic_ros.runtime.tensorrt_ops import (
    EXPORT_OPSET,
    TENSORRT_LIST_VERSION,
    TENSORRT_RESIZE_COORDINATES,
    TENSORRT_RESIZE_MODES,
    unsupported_ops,
)

INPUT_NAME = "image"
_LEVELS = range(len(FPN_STRIDES))
OUTPUT_NAMES: tuple[str, ...] = (
    "semantic_logits",
    "levelness_logits",
    *(f"box_cls_{i}" for i in _LEVELS),
    *(f"box_reg_{i}" for i in _LEVELS),
    *(f"centerness_{i}" for i in _LEVELS),
)
#: Metadata keys of an exported file.
META_CONFIG = "rt_panoptic_ros.config"
META_SOURCE_SHA256 = "rt_panoptic_ros.source_sha256"
META_FORMAT_VERSION = "rt_panoptic_ros.format_version"
META_PRECISION = "rt_panoptic_ros.precision"
META_CALIBRATION = "rt_panoptic_ros.calibration_sha256"
FORMAT_VERSION = 1

Progress = Callable[[str], None]


class FlatOutputs(nn.Module):
    """``RTPanoNet`` with its outputs as one flat tuple in :data:`OUTPUT_NAMES` order.

    ``HeadOutputs`` holds lists; an ONNX graph has a flat list of named outputs.
    """

    def __init__(self, network: RTPanoNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        return tuple(flatten_outputs(self.network(image)))


def flatten_outputs(outputs: HeadOutputs) -> list[Tensor]:
    """The 17 tensors of ``outputs`` in :data:`OUTPUT_NAMES` order."""
    return [
        outputs.semantic_logits,
        outputs.levelness_logits,
        *outputs.box_cls,
        *outputs.box_reg,
        *outputs.centerness,
    ]


def unflatten_outputs(tensors: Sequence[Tensor]) -> HeadOutputs:
    """Inverse of :func:`flatten_outputs`: 17 tensors in :data:`OUTPUT_NAMES` order -> ``HeadOutputs``."""
    n = len(FPN_STRIDES)
    if len(tensors) != len(OUTPUT_NAMES):
        raise ExportError(
            f"expected {len(OUTPUT_NAMES)} outputs ({', '.join(OUTPUT_NAMES)}), got {len(tensors)}"
        )
    return HeadOutputs(
        semantic_logits=tensors[0],
        levelness_logits=tensors[1],
        box_cls=list(tensors[2 : 2 + n]),
        box_reg=list(tensors[2 + n : 2 + 2 * n]),
        centerness=list(tensors[2 + 2 * n : 2 + 3 * n]),
    )


def output_shapes(cfg: Config, batch: int, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """Shape of every output for an input ``[batch, 3, height, width]`` (the HeadOutputs contract)."""
    c, c_th, levels = cfg.dataset.num_classes, cfg.dataset.num_thing_classes, len(FPN_STRIDES)
    shapes = {
        "semantic_logits": (batch, c, height // 8, width // 8),
        "levelness_logits": (batch, levels + 1, height // 4, width // 4),
    }
    for channels, prefix in ((c_th, "box_cls"), (4, "box_reg"), (1, "centerness")):
        for i, s in enumerate(FPN_STRIDES):
            shapes[f"{prefix}_{i}"] = (batch, channels, height // s, width // s)
    return {name: shapes[name] for name in OUTPUT_NAMES}


def check_size(height: int, width: int, batch: int = 1) -> None:
    """Raise :class:`ConfigError` unless H, W are positive multiples of 128 and batch >= 1."""
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % SIZE_DIVISIBILITY:
            raise ConfigError(f"{name}: {value}, expected a positive multiple of {SIZE_DIVISIBILITY}")
    if batch < 1:
        raise ConfigError(f"batch: {batch}, expected >= 1")


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote."""

    path: Path
    size_bytes: int
    op_counts: dict[str, int]  # op type -> nodes, most frequent first
    input_shape: tuple[int | str, ...]
    precision: str = "fp32"

    @property
    def op_count(self) -> int:
        return sum(self.op_counts.values())

    def summary(self) -> str:
        top = ", ".join(f"{op} {k}" for op, k in list(self.op_counts.items())[:6])
        return (
            f"wrote {self.path}: {self.precision}, {self.size_bytes / 1e6:.1f} MB, {self.op_count} ops of "
            f"{len(self.op_counts)} types ({top}, ...), all supported by TensorRT {TENSORRT_LIST_VERSION}'s "
            f"ONNX parser, input image {list(self.input_shape)} uint8"
        )


def export_onnx(
    model: RTPanoNet,
    output: str | Path,
    height: int,
    width: int,
    batch: int = 1,
    dynamic: bool = False,
    source_sha256: str = "",
    progress: Progress | None = None,
    precision: str = "fp32",
    calibration_dir: str | Path | None = None,
) -> ExportReport:
    """Export ``model`` to ``output`` (atomically) and check it; see the module docstring.

    Args:
        height, width: input size (multiples of 128); with ``dynamic`` only the size traced at.
        batch: images per call; with ``dynamic`` only the batch traced at.
        dynamic: batch, height and width become symbolic (``batch``, ``height``, ``width``).
        source_sha256: SHA-256 of the model file, recorded in the metadata (caches use it).
        progress: called with a line of text before the slow parts.
        precision: ``fp32``, ``fp16`` or ``int8`` (:mod:`~rt_panoptic_ros.runtime.precision`).
        calibration_dir: int8 only: a folder of images like the robot's (fitted to
            ``height`` x ``width`` as the Predictor fits frames; calibrated at ``batch``).

    Raises:
        ConfigError: a bad size or precision; InputError: no calibration images for int8;
        ExportError: a failed check (naming what failed).
    """
    output = Path(output)
    check_size(height, width, batch)
    if output.is_dir():  # before minutes of export, not after
        raise ExportError(f"{output}: is a directory, expected the name of the .onnx file to write")
    calibration = _calibration_files(precision, calibration_dir, batch)
    if progress:
        shape = "dynamic N x 3 x H x W" if dynamic else f"{batch}x3x{height}x{width}"
        what = f"{shape}, {precision}, opset {EXPORT_OPSET}"
        progress(f"exporting {model.cfg.model.backbone} to {output} ({what}) ...")
    proto = export_proto(
        model, height, width, batch, dynamic, source_sha256, precision, calibration, progress
    )
    data = proto.SerializeToString()
    atomic_write_bytes(output, data)
    return ExportReport(output, len(data), op_histogram(proto), _input_shape(proto), precision)


def _calibration_files(precision: str, calibration_dir: str | Path | None, batch: int) -> list[Path]:
    """The calibration images int8 needs (checked before the slow export), none otherwise."""
    check_precision(precision)
    if precision != "int8":
        if calibration_dir is not None:
            raise ConfigError(f"calibration_dir: only int8 is calibrated, not {precision}")
        return []
    if calibration_dir is None:
        raise ConfigError("precision int8: needs calibration images (--calibration-dir DIR)")
    return calibration_images(calibration_dir, batch)


def export_proto(
    model: RTPanoNet,
    height: int,
    width: int,
    batch: int = 1,
    dynamic: bool = False,
    source_sha256: str = "",
    precision: str = "fp32",
    calibration: Sequence[Path] = (),
    progress: Progress | None = None,
) -> onnx.ModelProto:
    """:func:`export_onnx` in memory: the checked ``ModelProto``, nothing written.

    Args:
        calibration: int8: the calibration image files (:func:`calibration_images`).
    """
    check_size(height, width, batch)
    check_precision(precision)
    device = next(model.parameters()).device
    image = torch.zeros((batch, 3, height, width), dtype=torch.uint8, device=device)
    buffer = io.BytesIO()
    dynamic_axes = _dynamic_axes() if dynamic else None
    # The graph computes the folded network (BatchNorm inside the convolutions): fewer ops,
    # and int8's per-channel weight scales see the weight actually applied.
    network = fold_frozen_batchnorm(model)  # an eval-mode copy; ``model`` is left as it is
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export (see the module
        # docstring for why we keep it), and tracing warns about shape arithmetic that is
        # exactly what dynamic axes need.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            FlatOutputs(network), (image,), buffer, dynamo=False, opset_version=EXPORT_OPSET,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    fingerprint = ""
    if precision == "fp16":
        proto = to_fp16(proto)
    elif precision == "int8":
        if not calibration:
            raise ConfigError("precision int8: needs calibration images (--calibration-dir DIR)")
        if progress:
            progress(f"calibrating int8 on {len(calibration)} image(s) ...")
        batches = calibration_batches(list(calibration), (batch, 3, height, width))
        proto = quantize_int8(proto, batches, INPUT_NAME, progress)
        fingerprint = calibration_fingerprint(list(calibration))
    # The file carries the config it runs with: a static export says its input size.
    cfg = (
        model.cfg
        if dynamic
        else replace(model.cfg, input=replace(model.cfg.input, height=height, width=width))
    )
    set_metadata(proto, cfg, source_sha256, precision, fingerprint)
    check_onnx(proto, cfg, None if dynamic else (batch, height, width), where="export")
    return proto


def _dynamic_axes() -> dict[str, dict[int, str]]:
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    axes["semantic_logits"] = {0: "batch", 2: "height_8", 3: "width_8"}
    axes["levelness_logits"] = {0: "batch", 2: "height_4", 3: "width_4"}
    for prefix in ("box_cls", "box_reg", "centerness"):
        for i, s in enumerate(FPN_STRIDES):
            axes[f"{prefix}_{i}"] = {0: "batch", 2: f"height_{s}", 3: f"width_{s}"}
    return axes


def set_metadata(
    proto: onnx.ModelProto, cfg: Config, source_sha256: str, precision: str = "fp32", calibration: str = ""
) -> None:
    """Record the config, the source file's hash, the precision and our format version in ``proto``."""
    entries = {
        META_CONFIG: json.dumps(cfg.to_dict()),
        META_SOURCE_SHA256: source_sha256,
        META_FORMAT_VERSION: str(FORMAT_VERSION),
        META_PRECISION: precision,
        META_CALIBRATION: calibration,
    }
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "rt_panoptic_ros"


def metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def check_onnx(proto: onnx.ModelProto, cfg: Config, shape: tuple[int, int, int] | None, where: str) -> None:
    """Check an exported graph: checker, shape inference, I/O names and shapes, TensorRT ops.

    Args:
        shape: ``(N, H, W)`` of a static export, whose every output shape is then compared
            with :func:`output_shapes`; ``None`` for a dynamic one (channels only).
        where: names the file in messages.

    Raises:
        ExportError: every problem found, in one line.
    """
    try:
        onnx.checker.check_model(proto, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(
            f"{where}: not a valid ONNX graph ({str(error).strip().splitlines()[0][:200]})"
        ) from None
    problems = []
    inputs = [i.name for i in inferred.graph.input]
    if inputs != [INPUT_NAME]:
        problems.append(f"inputs {inputs}, expected ['{INPUT_NAME}']")
    elif inferred.graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        problems.append("input 'image' is not uint8")
    outputs = {o.name: _dims(o) for o in inferred.graph.output}
    if list(outputs) != list(OUTPUT_NAMES):
        problems.append(f"outputs {list(outputs)}, expected {list(OUTPUT_NAMES)}")
    else:
        expected = output_shapes(cfg, *(shape or (1, SIZE_DIVISIBILITY, SIZE_DIVISIBILITY)))
        for name, dims in outputs.items():
            want = expected[name]
            # A dynamic export knows its channel counts only; a static one every dimension.
            if shape is None and not (len(dims) == 4 and dims[1] == want[1]):
                problems.append(f"output {name} has shape {dims}, expected {want[1]} channels")
            elif shape is not None and tuple(dims) != want:
                problems.append(f"output {name} has shape {dims}, expected {list(want)}")
    problems += tensorrt_problems(inferred)
    if problems:
        raise ExportError(f"{where}: " + "; ".join(problems))


def tensorrt_problems(proto: onnx.ModelProto) -> list[str]:
    """What in ``proto`` TensorRT's ONNX parser would refuse: ops off the list, custom
    domains, an opset outside its range, Resize modes it lacks."""
    problems = []
    ops = op_histogram(proto)
    bad = unsupported_ops(ops)
    if bad:
        problems.append(
            f"op(s) TensorRT {TENSORRT_LIST_VERSION}'s ONNX parser does not support: {', '.join(bad)}"
        )
    domains = sorted({n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if domains:
        problems.append(f"custom op domain(s) {domains}")
    for node in proto.graph.node:
        if node.op_type == "Resize":
            attrs = {a.name: a.s.decode() for a in node.attribute if a.type == onnx.AttributeProto.STRING}
            mode = attrs.get("mode", "nearest")
            coordinates = attrs.get("coordinate_transformation_mode", "half_pixel")
            if mode not in TENSORRT_RESIZE_MODES or coordinates not in TENSORRT_RESIZE_COORDINATES:
                problems.append(
                    f"{node.name}: Resize mode {mode!r} / {coordinates!r} not supported by TensorRT"
                )
    return problems


def op_histogram(proto: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(collections.Counter(n.op_type for n in proto.graph.node).most_common())


def read_onnx(path: str | Path) -> tuple[onnx.ModelProto, Config]:
    """Load an ONNX file written by :func:`export_onnx` and the config in its metadata.

    Raises:
        ExportError: missing or unreadable file, or one without our metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path))
    except Exception as error:  # protobuf raises DecodeError, onnx its own types: all mean "corrupt"
        raise ExportError(f"{path}: not an ONNX file ({type(error).__name__})") from None
    return proto, config_of(proto, str(path))


def config_of(proto: onnx.ModelProto, where: str) -> Config:
    """The config an exported graph carries in its metadata."""
    meta = metadata(proto)
    if META_CONFIG not in meta:
        raise ExportError(f"{where}: no {META_CONFIG} metadata (export it with rt-panoptic-export)")
    try:
        version = int(meta.get(META_FORMAT_VERSION, "0"))
        data: Any = json.loads(meta[META_CONFIG])
    except ValueError:
        raise ExportError(f"{where}: unreadable {META_CONFIG} metadata") from None
    if version > FORMAT_VERSION:
        raise ExportError(
            f"{where}: format version {version}; this rt_panoptic_ros reads up to {FORMAT_VERSION}"
        )
    try:
        return Config.from_dict(data, source=f"{where}: metadata")
    except ConfigError as error:
        raise ExportError(str(error)) from None


def static_input_shape(proto: onnx.ModelProto) -> tuple[int | None, ...]:
    """``[N, 3, H, W]`` of the ``image`` input, ``None`` for a symbolic dimension."""
    return tuple(d if isinstance(d, int) else None for d in _input_shape(proto))


def _input_shape(proto: onnx.ModelProto) -> tuple[int | str, ...]:
    return tuple(_dims(proto.graph.input[0]))


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]
