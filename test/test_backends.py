"""Backends behind the Predictor: ONNX Runtime against torch, the ONNX cache, ``auto``, option errors."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from conftest import TRI_REFERENCE, rigged_model, tiny_config

from rt_panoptic_ros import Predictor
from rt_panoptic_ros.config import preset
from rt_panoptic_ros.errors import CheckpointError, ConfigError, EngineError, InputError
from rt_panoptic_ros.model import RTPanoNet, load_model, save_checkpoint
from rt_panoptic_ros.panoptic import decode
from rt_panoptic_ros.runtime.backends import (
    Availability,
    OnnxRuntimeBackend,
    choose_backend,
    create_backend,
    probe,
)
from rt_panoptic_ros.runtime.export import export_onnx, flatten_outputs, read_onnx
from rt_panoptic_ros.runtime.sources import ModelSource, cached_onnx
from rt_panoptic_ros.runtime.tensorrt_ops import TENSORRT_ONNX_OPS

#: ONNX Runtime and torch agree to this, relative to each output's largest magnitude.
RELATIVE_TOLERANCE = 1e-4


def random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|: elementwise ratios blow up where a logit is ~0."""
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-12))


def assert_outputs_match(got, want):
    names = ["semantic_logits", "levelness_logits", *(f"{f}_{i}" for f in ("box_cls", "box_reg", "centerness")
                                                     for i in range(5))]  # fmt: skip
    for name, a, b in zip(names, flatten_outputs(got), flatten_outputs(want), strict=True):
        assert a.shape == b.shape and a.dtype == torch.float32, name
        assert relative_error(a, b) <= RELATIVE_TOLERANCE, f"{name}: {relative_error(a, b):.2e}"


def assert_same_results(a, b):
    """Identical maps and segments; scores to float32 noise (the engines' sums differ in the last bits)."""
    assert torch.equal(a.semantic, b.semantic)
    assert torch.equal(a.instance, b.instance)
    strip = [dataclasses.replace(s, score=0.0) for s in a.segments]
    assert strip == [dataclasses.replace(s, score=0.0) for s in b.segments]
    assert [s.score for s in a.segments] == pytest.approx([s.score for s in b.segments], rel=1e-4)


# --- the TRI preset, real converted weights -----------------------------------------------------


@pytest.fixture(scope="module")
def tri(tri_model_file, tmp_path_factory):
    """The converted TRI model exported once at 256x512 (static), the fixture image, torch's outputs."""
    model = load_model(tri_model_file)
    path = tmp_path_factory.mktemp("tri_onnx") / "tri_256x512.onnx"
    export_onnx(model, path, 256, 512)
    image = np.load(TRI_REFERENCE / "fixture_seed1_256x512.npz")["image_rgb"]
    batch = torch.from_numpy(image).permute(2, 0, 1)[None]  # NHWC memory, as the Predictor makes it
    with torch.no_grad():
        outputs = model(batch)
    return model, path, image, batch, outputs


def test_tri_export_uses_only_tensorrt_ops(tri):
    import onnx

    ops = {n.op_type for n in onnx.load(tri[1]).graph.node}
    assert ops <= TENSORRT_ONNX_OPS
    assert "Slice" in ops  # the RGB -> BGR flip of the TRI model's input (a negative-step Slice)


def test_onnxruntime_matches_torch_on_the_tri_model(tri):
    model, path, image, batch, want = tri
    backend = OnnxRuntimeBackend(path, model.cfg, torch.device("cpu"), where=str(path))
    got = backend(batch)
    assert_outputs_match(got, want)
    a, b = decode(got, model.cfg, (256, 512))[0], decode(want, model.cfg, (256, 512))[0]
    assert_same_results(a, b)
    assert len(set(torch.unique(a.semantic).tolist())) > 1  # a real map, not all void
    # and through the Predictor, which adopts the file's input size
    predictor = Predictor(path, backend="onnxruntime")
    assert (predictor.cfg.input.height, predictor.cfg.input.width) == (256, 512)
    assert_same_results(predictor(image), a)


def test_a_size_the_graph_was_not_built_for_is_one_clear_error(tri):
    _, path, image, _, _ = tri
    predictor = Predictor(path, backend="onnxruntime")
    with pytest.raises(InputError, match=r"tri_256x512.onnx takes input 1x3x256x512 .* got 2x3x256x512"):
        predictor.predict_batch([image, image])
    with pytest.raises(InputError, match=r"takes input 1x3x256x512 .* got 1x3x512x1024"):
        Predictor(path, backend="onnxruntime", input_size=(512, 1024))


# --- a small preset, through the Predictor and the ONNX cache -------------------------------------


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(
        RTPanoNet(preset("small_cityscapes")), tmp_path_factory.mktemp("small") / "small.pt"
    )


def test_onnxruntime_matches_torch_on_the_small_preset(small_file):
    torch_predictor = Predictor(small_file, backend="torch")
    ort_predictor = Predictor(small_file, backend="onnxruntime")
    for h, w in ((128, 256), (256, 128)):  # a dynamic export: any size
        batch = torch.from_numpy(random_image(h, w)).permute(2, 0, 1)[None]
        assert_outputs_match(ort_predictor.infer(batch), torch_predictor.infer(batch))


def test_onnxruntime_decodes_the_same_panoptic_maps(rigged_file):
    """A network that sees instances everywhere: maps and segments identical to torch's."""
    a, b = Predictor(rigged_file, backend="torch"), Predictor(rigged_file, backend="onnxruntime")
    images = [random_image(200, 300, 1), random_image(130, 250, 2)]
    for x, y in zip(a.predict_batch(images), b.predict_batch(images), strict=True):
        assert len(x.segments) > 3
        assert_same_results(x, y)


def test_onnx_cache_beside_the_model_is_keyed_and_reused(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rt_panoptic_ros")
    torch.manual_seed(0)
    net = RTPanoNet(tiny_config())
    model = save_checkpoint(net, tmp_path / "m.pt")
    first = cached_onnx(ModelSource.open(model), None)
    assert first.parent == tmp_path / "m.cache" and first.name.endswith(".dynamic.fp32.opset17.onnx")
    assert "exporting resnet18 to" in caplog.text
    caplog.clear()
    assert cached_onnx(ModelSource.open(model), None) == first  # reused: not exported again
    assert f"using the ONNX export {first}" in caplog.text and "exporting" not in caplog.text
    first.write_bytes(b"truncated")  # a corrupt cache file is made again, with a log line
    caplog.clear()
    assert cached_onnx(ModelSource.open(model), None) == first
    assert "not an ONNX file" in caplog.text and "re-exporting" in caplog.text
    read_onnx(first)
    with torch.no_grad():
        net.head.centerness.bias.fill_(1.0)
    save_checkpoint(net, model)  # a changed model: a new key, a new file
    assert cached_onnx(ModelSource.open(model), None) != first
    static = cached_onnx(ModelSource.open(model), (1, 128, 256))  # a shape is part of the key
    assert static.name.endswith(".1x3x128x256.fp32.opset17.onnx")
    assert len(list((tmp_path / "m.cache").glob("*.onnx"))) == 3


def test_an_in_memory_network_runs_without_a_cache():
    net = rigged_model()
    image = random_image(128, 256)
    assert_same_results(Predictor(net, backend="onnxruntime")(image), Predictor(net)(image))


# --- auto ----------------------------------------------------------------------------------------


def test_auto_picks_what_this_machine_has_and_says_why(rigged_file, caplog):
    caplog.set_level(logging.INFO, logger="rt_panoptic_ros")
    here = probe()
    predictor = Predictor(rigged_file, backend="auto")
    expected = choose_backend(here, "checkpoint", fixed_shape=False)
    assert (predictor.backend.name, predictor.device.type) == (expected.backend, expected.device.type)
    assert expected.reason in caplog.text
    if not here.cuda:  # this machine: no CUDA, hence no TensorRT -> ONNX Runtime on the CPU
        assert predictor.backend.name == "onnxruntime" and predictor.device.type == "cpu"
        assert "skipped tensorrt on cuda: no CUDA device; torch on cuda: no CUDA device" in caplog.text


@pytest.mark.parametrize(
    ("available", "kind", "fixed", "device", "expected", "reason"),
    [
        ((True, True, True), "checkpoint", True, None, ("tensorrt", "cuda"), "(the first choice)"),
        ((True, True, True), "checkpoint", False, None, ("torch", "cuda"), "needs a fixed input size"),
        ((True, True, True), "memory", True, None, ("torch", "cuda"), "tensorrt on cuda: needs a model file"),
        (
            (True, False, True),
            "checkpoint",
            True,
            None,
            ("torch", "cuda"),
            "tensorrt package is not installed",
        ),
        ((True, True, True), "checkpoint", True, "cpu", ("onnxruntime", "cpu"), "device cpu was asked for"),
        (
            (True, True, True),
            "onnx",
            False,
            None,
            ("onnxruntime", "cpu"),
            "torch on cuda: cannot run an onnx",
        ),
        ((True, True, True), "engine", False, None, ("tensorrt", "cuda"), "(the first choice)"),
        ((False, False, True), "checkpoint", True, None, ("onnxruntime", "cpu"), "no CUDA device"),
        ((False, False, False), "checkpoint", True, None, ("torch", "cpu"), "onnxruntime package is not"),
    ],
)
def test_auto_order(available, kind, fixed, device, expected, reason):
    choice = choose_backend(Availability(*available), kind, fixed, torch.device(device) if device else None)
    assert (choice.backend, choice.device.type) == expected
    assert reason in choice.reason


def test_auto_with_nothing_usable_says_why():
    with pytest.raises(EngineError, match=r"nothing can run this model here \(tensorrt on cuda: no CUDA"):
        choose_backend(Availability(cuda=False, tensorrt=False, onnxruntime=True), "engine", True)


# --- errors a user can cause -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"backend": "openvino"}, ConfigError, "backend: 'openvino', expected one of auto, torch"),
        ({"precision": "fp16"}, ConfigError, "fp16 needs a CUDA device for the torch backend"),
        ({"precision": "int8"}, ConfigError, "precision: 'int8' for the torch backend"),
        (
            {"backend": "onnxruntime", "precision": "fp16"},
            ConfigError,
            r"fp16 for onnxruntime needs a model file",
        ),
        ({"cuda_graph": True}, ConfigError, "cuda_graph: needs a CUDA device"),
        ({"backend": "onnxruntime", "cuda_graph": True}, ConfigError, "only the torch backend replays"),
        ({"input_size": (100, 256)}, ConfigError, "input.height: 100, expected 0 or a multiple of 128"),
        ({"backend": "tensorrt", "device": "cpu"}, EngineError, "tensorrt backend: "),
    ],
)
def test_bad_options_are_one_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message) as raised:
        Predictor(rigged_model(), **kwargs)
    assert "\n" not in str(raised.value)


def test_missing_or_corrupt_model_files_are_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope.pt: no such file"):
        Predictor(tmp_path / "nope.pt", backend="onnxruntime")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"junk.pt: not a PyTorch checkpoint"):
        Predictor(tmp_path / "junk.pt", backend="auto")


def test_torch_cannot_run_an_onnx_file(tri):
    with pytest.raises(
        ConfigError, match=r"backend torch: needs a model file \(.pt\) or a network, got .*\.onnx"
    ):
        create_backend("torch", tri[1])
