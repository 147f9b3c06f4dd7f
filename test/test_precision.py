"""Precision in the ONNX graph: fp16 and int8 Q/DQ exports, what TensorRT needs of them, the int8
CPU path through ONNX Runtime, and the calibration images.

The int8 checks run on the bundled (trained) model: a random network's activations say
nothing about what calibration does to a real one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import run_cli, tiny_config
from onnx import TensorProto, numpy_helper

from rt_panoptic_ros import Predictor
from rt_panoptic_ros.errors import ConfigError, ImageFileError, InputError
from rt_panoptic_ros.model import RTPanoNet, load_model, save_checkpoint
from rt_panoptic_ros.runtime.calibration import (
    calibration_batches,
    calibration_fingerprint,
    calibration_images,
)
from rt_panoptic_ros.runtime.export import (
    META_CALIBRATION,
    META_PRECISION,
    export_onnx,
    export_proto,
    metadata,
    read_onnx,
)
from rt_panoptic_ros.runtime.precision import FP32_OPS, graph_precision, int8_for_cpu
from rt_panoptic_ros.training.data.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "models" / "small_synthetic.pt"


def run(proto: onnx.ModelProto, image: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image})


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """Calibration images (seed 2) and two other scenes to check on (seed 5)."""
    folder = tmp_path_factory.mktemp("scenes")
    write_dataset(folder / "calibration", 8, seed=2, height=256, width=512, progress=False)
    write_dataset(folder / "check", 2, seed=5, height=256, width=512, progress=False)
    return folder


@pytest.fixture(scope="module")
def int8_file(scenes, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("int8") / "bundled.int8.onnx"
    export_onnx(
        load_model(BUNDLED),
        path,
        128,
        256,
        precision="int8",
        calibration_dir=scenes / "calibration" / "images",
    )
    return path


# --- fp16 ----------------------------------------------------------------------------------------


def test_fp16_export_keeps_sensitive_ops_and_io_in_float32():
    torch.manual_seed(0)
    network = RTPanoNet(tiny_config()).eval()
    fp32 = export_proto(network, 128, 256)
    fp16 = export_proto(network, 128, 256, precision="fp16")
    assert graph_precision(fp32) == "fp32" and graph_precision(fp16) == "fp16"
    assert metadata(fp16)[META_PRECISION] == "fp16"
    inferred = onnx.shape_inference.infer_shapes(fp16)
    types = {
        v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]
    }
    types |= {t.name: t.data_type for t in inferred.graph.initializer}
    assert inferred.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert {o.type.tensor_type.elem_type for o in inferred.graph.output} == {TensorProto.FLOAT}
    convs = [n for n in fp16.graph.node if n.op_type == "Conv"]
    assert (
        sum(types.get(n.input[1]) == TensorProto.FLOAT16 for n in convs) >= len(convs) - 1
    )  # the stem's may not
    kept = [n for n in fp16.graph.node if n.op_type in FP32_OPS]
    assert kept and all(types.get(n.input[0]) == TensorProto.FLOAT for n in kept)
    # box_reg = exp(scale * x): past e^11 (65504) it is inf in fp16
    exps = [n for n in fp16.graph.node if n.op_type == "Exp"]
    assert len(exps) == 5
    for node in exps:
        scale = next(n for n in fp16.graph.node if node.input[0] in n.output)
        assert types[node.output[0]] == types[node.input[0]] == TensorProto.FLOAT
        assert types.get(scale.input[0]) == TensorProto.FLOAT, scale.name  # the clip before exp
    image = np.random.default_rng(0).integers(0, 256, (1, 3, 128, 256), dtype=np.uint8)
    for a, b in zip(run(fp16, image), run(fp32, image), strict=True):
        # fp16 keeps ~3 decimal digits: 1 % of each output's own range
        assert np.abs(a - b).max() <= 1e-2 * (np.abs(b).max() + 1e-3)


# --- int8 ----------------------------------------------------------------------------------------


def test_int8_export_is_what_tensorrt_takes(int8_file, scenes):
    proto, cfg = read_onnx(int8_file)
    assert graph_precision(proto) == "int8" and cfg.input.height == 128
    meta = metadata(proto)
    files = calibration_images(scenes / "calibration" / "images")
    assert meta[META_PRECISION] == "int8" and meta[META_CALIBRATION] == calibration_fingerprint(files)
    initializers = {t.name: t for t in proto.graph.initializer}
    producer = {out: n for n in proto.graph.node for out in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:  # every convolution reads dequantised activations and int8 weights
        activation, weight = producer[conv.input[0]], producer[conv.input[1]]
        assert activation.op_type == weight.op_type == "DequantizeLinear", conv.name
        w = initializers[weight.input[0]]
        assert w.data_type == TensorProto.INT8 and len(w.dims) == 4
        axis = {a.name: a.i for a in weight.attribute}.get("axis", 1)
        assert axis == 0 and list(initializers[weight.input[1]].dims) == [w.dims[0]]  # per output channel
    for node in proto.graph.node:  # TensorRT: int8, symmetric (zero point 0)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = initializers[node.input[2]]
            assert zero.data_type == TensorProto.INT8 and not numpy_helper.to_array(zero).any(), node.name


def test_int8_on_the_cpu_uses_integer_kernels_with_the_same_numbers(int8_file, tmp_path):
    proto = onnx.load(str(int8_file))
    cpu = int8_for_cpu(proto)
    image = np.random.default_rng(1).integers(0, 256, (1, 3, 128, 256), dtype=np.uint8)
    for a, b in zip(run(cpu, image), run(proto, image), strict=True):
        np.testing.assert_array_equal(a, b)  # q_u8 = q_s8 + 128 over the same scale: same values
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(cpu.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == sum(n.op_type == "Conv" for n in proto.graph.node)


def test_int8_segments_like_fp32(int8_file, scenes):
    """Decoded maps of the int8 graph against the fp32 network on scenes it was not calibrated on."""
    fp32 = Predictor(BUNDLED, backend="onnxruntime", input_size=(128, 256))
    int8 = Predictor(int8_file, backend="onnxruntime")
    assert (fp32.backend.precision, int8.backend.precision) == ("fp32", "int8")
    for path in sorted((scenes / "check" / "images").iterdir()):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        a, b = fp32(rgb), int8(rgb)
        assert (a.semantic == b.semantic).float().mean() > 0.97, path
        assert abs(len(a.segments) - len(b.segments)) <= 1, path


def test_int8_from_a_model_file_is_cached_and_checked(scenes, tmp_path, caplog):
    model = tmp_path / "m.pt"
    model.write_bytes(BUNDLED.read_bytes())
    calibration = scenes / "calibration" / "images"
    with pytest.raises(ConfigError, match=r"int8 for onnxruntime needs a model file \(\.pt or exported"):
        Predictor(RTPanoNet(tiny_config()), backend="onnxruntime", precision="int8")
    tiny = save_checkpoint(RTPanoNet(tiny_config()), tmp_path / "tiny.pt")  # no input size
    with pytest.raises(ConfigError, match="int8: calibrates at one input size"):
        Predictor(tiny, backend="onnxruntime", precision="int8", calibration_dir=calibration)
    with pytest.raises(ConfigError, match="int8: needs calibration images"):
        Predictor(model, backend="onnxruntime", precision="int8", input_size=(128, 256))
    with caplog.at_level(logging.INFO, logger="rt_panoptic_ros.runtime"):
        first = Predictor(
            model, backend="onnxruntime", precision="int8", input_size=(128, 256), calibration_dir=calibration
        )
        assert first.backend.precision == "int8" and "calibrat" in caplog.text
        caplog.clear()
        Predictor(
            model, backend="onnxruntime", precision="int8", input_size=(128, 256), calibration_dir=calibration
        )
        assert "using the ONNX export" in caplog.text and "calibrat" not in caplog.text
    exported = list((tmp_path).rglob("*.int8.*.onnx"))
    assert len(exported) == 1, exported
    with pytest.raises(ConfigError, match=r"is an int8 graph \(precision is in the ONNX file"):
        Predictor(exported[0], backend="onnxruntime", precision="fp32")


def test_export_cli_precision(scenes, tmp_path):
    path = save_checkpoint(RTPanoNet(tiny_config()), tmp_path / "tiny.pt")
    calibration = str(scenes / "calibration" / "images")
    ok = run_cli("rt-panoptic-export", str(path), "--output", str(tmp_path / "t.onnx"), "--height", "128",
                 "--width", "256", "--precision", "int8", "--calibration-dir", calibration)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "int8" in ok.stdout and graph_precision(onnx.load(str(tmp_path / "t.onnx"))) == "int8"
    for extra, message in (
        ([], "precision int8: needs calibration images (--calibration-dir DIR)"),
        (["--calibration-dir", str(tmp_path / "none")], "none: no such folder of calibration images"),
    ):
        size = ("--height", "128", "--width", "256")
        bad = run_cli("rt-panoptic-export", str(path), "--output", str(tmp_path / "u.onnx"), *size,
                      "--precision", "int8", *extra)  # fmt: skip
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and message in bad.stderr, bad.stderr
        assert not (tmp_path / "u.onnx").exists()
    fp16 = run_cli("rt-panoptic-export", str(path), "--output", str(tmp_path / "v.onnx"), "--height", "128",
                   "--width", "256", "--precision", "fp16", "--calibration-dir", calibration)  # fmt: skip
    assert fp16.returncode != 0 and "calibration_dir: only int8 is calibrated, not fp16" in fp16.stderr


# --- calibration images --------------------------------------------------------------------------


def test_calibration_images_are_prepared_like_frames_and_all_used(tmp_path):
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(64, 64), (256, 512), (100, 300)]):
        cv2.imwrite(str(tmp_path / f"{k}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    files = calibration_images(tmp_path, batch=2)
    assert [f.name for f in files] == ["0.png", "1.png", "2.png"]
    batches = list(calibration_batches(files, (2, 3, 128, 256)))
    # 3 images, batch 2: the last batch is completed with the first image, none is dropped
    assert len(batches) == 2 and all(b.shape == (2, 3, 128, 256) and b.dtype == np.uint8 for b in batches)
    np.testing.assert_array_equal(batches[1][1], batches[0][0])
    first = batches[0][0]  # 64x64 fitted into 128x256 (scaled 2x, aspect kept), padded on the right
    assert first[:, :, 128:].max() == 0 and first[:, :, :128].min(axis=(1, 2)).max() > 0
    with pytest.raises(InputError, match=r"3 calibration image\(s\), fewer than one batch of 4"):
        calibration_images(tmp_path, batch=4)


def test_calibration_fingerprint_follows_the_content(tmp_path):
    image = np.zeros((32, 32, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    before = calibration_fingerprint(calibration_images(tmp_path))
    image[5, 5] = 1  # same name, same size on disk or not: other pixels
    cv2.imwrite(str(tmp_path / "a.png"), image)
    assert calibration_fingerprint(calibration_images(tmp_path)) != before


def test_a_broken_calibration_image_is_named(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageFileError, match=r"a\.png"):
        next(calibration_batches(calibration_images(tmp_path), (1, 3, 128, 128)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no calibration images"):
        calibration_images(tmp_path / "empty")


def test_infer_cli_runs_an_int8_file_on_onnxruntime(int8_file, scenes, tmp_path):
    out = tmp_path / "predictions"
    result = run_cli("rt-panoptic-infer", str(scenes / "check" / "images"), "--model", str(int8_file),
                     "--backend", "onnxruntime", "--output", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(list((out / "panoptic").glob("*.png"))) == 2 and (out / "panoptic.json").is_file()
