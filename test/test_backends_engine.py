"""The TensorRT engine cache (pure Python: keys, file names, file format, reuse and rebuild),
the TensorRT version policy and network flags (pure functions), and TensorRT itself where a
GPU with TensorRT exists (test_gpu.py).

Engine bytes here are whatever a builder returns: the cache never looks inside them, so the
key and invalidation logic is exercised for real with GPU names and TensorRT versions given
as the plain strings they are.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging

import pytest
import torch
from conftest import rigged_model, tiny_config

from rt_panoptic_ros import Predictor
from rt_panoptic_ros.cli import EXIT_ERROR, build_engine_main
from rt_panoptic_ros.errors import ConfigError, EngineError, InputError
from rt_panoptic_ros.model import save_checkpoint
from rt_panoptic_ros.runtime.backends.input_checks import check_input_shape
from rt_panoptic_ros.runtime.backends.tensorrt_backend import check_tensorrt_version, network_flags
from rt_panoptic_ros.runtime.engine_cache import (
    ENGINE_MAGIC,
    EngineKey,
    check_engine_runs_here,
    engine_path,
    load_or_build,
    read_engine_file,
    write_engine_file,
)

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()

KEY = EngineKey(
    source_kind="pt", source_sha256="5" * 64, onnx_sha256="a" * 64, gpu="NVIDIA H100 80GB HBM3",
    tensorrt="10.3.0", precision="fp16", input_shape=(1, 3, 512, 1024),
)  # fmt: skip
CFG = tiny_config()


class Builder:
    """Stands for TensorRT's builder: returns distinct bytes per call and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"engine #{self.calls}".encode() * 100


def test_engine_file_round_trip(tmp_path):
    path = engine_path(tmp_path, "tri", KEY)
    assert path.name == "tri.pt-5555555555555555.fp16.1x3x512x1024.engine"
    write_engine_file(path, KEY, CFG, b"\x00serialized engine\xff")
    loaded = read_engine_file(path)
    assert loaded.key == KEY and loaded.cfg == CFG and loaded.engine == b"\x00serialized engine\xff"
    assert path.read_bytes().startswith(ENGINE_MAGIC)


def test_a_matching_engine_is_reused(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rt_panoptic_ros")
    path, build = tmp_path / "m.engine", Builder()
    first = load_or_build(path, KEY, CFG, build)
    assert build.calls == 1 and f"no TensorRT engine at {path}: building it" in caplog.text
    caplog.clear()
    again = load_or_build(path, KEY, CFG, build)
    assert build.calls == 1 and again.engine == first.engine
    assert f"using the TensorRT engine {path}" in caplog.text


@pytest.mark.parametrize(
    ("change", "logged"),
    [
        ({"gpu": "NVIDIA GeForce RTX 4090"}, "GPU 'NVIDIA H100 80GB HBM3' -> 'NVIDIA GeForce RTX 4090'"),
        ({"tensorrt": "10.7.0"}, "TensorRT '10.3.0' -> '10.7.0'"),
        (
            {"onnx_sha256": "b" * 64},
            "ONNX graph (the model or its export changed) aaaaaaaaaaaa -> bbbbbbbbbbbb",
        ),
        ({"source_sha256": "6" * 64}, "model file (it changed) 555555555555 -> 666666666666"),
        ({"source_kind": "onnx"}, "model file kind 'pt' -> 'onnx'"),
        ({"precision": "fp32"}, "precision 'fp16' -> 'fp32'"),
        ({"input_shape": (1, 3, 1024, 2048)}, "input shape 1x3x512x1024 -> 1x3x1024x2048"),
    ],
)
def test_an_engine_for_another_key_is_rebuilt_with_a_log_line(tmp_path, caplog, change, logged):
    caplog.set_level(logging.INFO, logger="rt_panoptic_ros")
    path, build = tmp_path / "m.engine", Builder()
    load_or_build(path, KEY, CFG, build)
    caplog.clear()
    new_key = dataclasses.replace(KEY, **change)
    rebuilt = load_or_build(path, new_key, CFG, build)
    assert build.calls == 2 and rebuilt.key == new_key
    assert f"{path} was built for another {logged}: rebuilding" in caplog.text
    assert read_engine_file(path).key == new_key  # replaced in place
    load_or_build(path, new_key, CFG, build)
    assert build.calls == 2  # and reused from then on


def corrupt(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) - 10])
    elif how == "flipped byte":
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    elif how == "bare engine":
        path.write_bytes(b"serialized engine without our header")
    elif how == "bad header":
        path.write_bytes(ENGINE_MAGIC + (10).to_bytes(8, "little") + b"{not json}" + b"x")
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "corrupt engine file .* truncated or altered"),
        ("flipped byte", "corrupt engine file .* truncated or altered"),
        ("bare engine", "not an rt_panoptic_ros engine file"),
        ("bad header", r"corrupt engine file \(unreadable header\)"),
        ("empty", "not an rt_panoptic_ros engine file"),
    ],
)
def test_a_corrupt_engine_is_one_clear_error_and_rebuilt_in_the_cache(tmp_path, caplog, how, message):
    caplog.set_level(logging.INFO, logger="rt_panoptic_ros")
    path, build = tmp_path / "m.engine", Builder()
    load_or_build(path, KEY, CFG, build)
    corrupt(path, how)
    with pytest.raises(EngineError, match=message) as raised:
        read_engine_file(path)
    assert str(raised.value).startswith(str(path)) and "\n" not in str(raised.value)
    caplog.clear()
    load_or_build(path, KEY, CFG, build)
    assert build.calls == 2 and ": rebuilding" in caplog.text and str(path) in caplog.text
    assert read_engine_file(path).engine == b"engine #2" * 100


def test_a_failed_build_leaves_the_old_engine(tmp_path):
    path = tmp_path / "m.engine"
    load_or_build(path, KEY, CFG, Builder())

    def broken() -> bytes:
        raise EngineError("TensorRT could not build an engine")

    with pytest.raises(EngineError):
        load_or_build(path, dataclasses.replace(KEY, gpu="other"), CFG, broken)
    assert read_engine_file(path).key == KEY


def test_a_model_file_and_an_onnx_file_of_one_stem_get_their_own_engines(tmp_path):
    """model.pt and model.onnx in one folder must not rebuild each other's engine at every start."""
    pt = KEY
    onnx = dataclasses.replace(KEY, source_kind="onnx", source_sha256="7" * 64, onnx_sha256="7" * 64)
    assert engine_path(tmp_path, "model", pt) != engine_path(tmp_path, "model", onnx)
    assert engine_path(tmp_path, "model", onnx).name == "model.onnx-7777777777777777.fp16.1x3x512x1024.engine"
    # Two model files of one name (say from two folders, one --cache-dir): their hashes differ.
    other = dataclasses.replace(KEY, source_sha256="8" * 64)
    assert engine_path(tmp_path, "model", pt) != engine_path(tmp_path, "model", other)
    # And each is reused from its own file.
    build = Builder()
    for key in (pt, onnx, pt, onnx):
        load_or_build(engine_path(tmp_path, "model", key), key, CFG, build)
    assert build.calls == 2


def test_an_engine_file_of_the_weakly_typed_format_is_rebuilt(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rt_panoptic_ros")
    path, build = tmp_path / "m.engine", Builder()
    load_or_build(path, KEY, CFG, build)
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"format_version": 2', b'"format_version": 1', 1))
    with pytest.raises(
        EngineError, match=r"m.engine: engine file format 1, built weakly typed .* build it again"
    ):
        read_engine_file(path)
    load_or_build(path, KEY, CFG, build)
    assert build.calls == 2 and "built weakly typed" in caplog.text


def test_engine_keys_are_checked():
    with pytest.raises(ConfigError, match="precision: 'bf16', expected one of fp16, fp32, int8"):
        dataclasses.replace(KEY, precision="bf16")
    with pytest.raises(ConfigError, match="source kind: 'checkpoint', expected one of pt, onnx"):
        dataclasses.replace(KEY, source_kind="checkpoint")
    with pytest.raises(ConfigError, match=r"input shape: \[1, 4, 512, 1024\], expected \[N, 3, H, W\]"):
        dataclasses.replace(KEY, input_shape=(1, 4, 512, 1024))
    assert EngineKey.from_dict(KEY.to_dict()) == KEY


def test_an_input_the_engine_was_not_built_for_is_one_clear_error():
    check_input_shape((1, 3, 512, 1024), (1, 3, 512, 1024), "m.engine")
    check_input_shape((None, 3, None, None), (4, 3, 256, 128), "dynamic.onnx")
    with pytest.raises(InputError, match=r"m.engine takes input 1x3x512x1024 .*, got 1x3x256x512: run it at"):
        check_input_shape((1, 3, 512, 1024), (1, 3, 256, 512), "m.engine")


# --- TensorRT versions --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["10.3.0", "10.3.0.26", "10.16.1.11", "11.0.0", "11.4.0.post1"])
def test_tensorrt_10_3_and_11_are_supported(version):
    assert check_tensorrt_version(version) is None


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("8.6.1", "TensorRT 8 builds weakly typed"),
        ("9.3.0.1", "TensorRT 9 was a limited, LLM-only release line"),
        ("10.2.0", "10.3 is JetPack 6's, the oldest tested: upgrade TensorRT"),
        ("10.0.1", "10.3 is JetPack 6's"),
    ],
)
def test_an_older_tensorrt_is_refused_in_one_line(version, why):
    with pytest.raises(EngineError) as raised:
        check_tensorrt_version(version)
    message = str(raised.value)
    assert message.startswith(f"tensorrt backend: TensorRT {version} found, needs TensorRT 10.3+ or 11.x: ")
    assert why in message and "\n" not in message


def test_a_newer_tensorrt_major_is_tried_with_a_warning():
    warning = check_tensorrt_version("12.0.1")
    assert warning is not None and "TensorRT 12.0.1 is newer than the tested" in warning
    assert "trying it like 11.x" in warning and "\n" not in warning


@pytest.mark.parametrize("version", ["", "ten", "11"])
def test_an_unreadable_tensorrt_version_is_one_clear_error(version):
    with pytest.raises(EngineError, match=r"cannot read the TensorRT version"):
        check_tensorrt_version(version)


def test_networks_are_strongly_typed_on_both_majors():
    # 10.x: STRONGLY_TYPED is opt-in (its enum value is 1 in 10.x: EXPLICIT_BATCH is 0).
    assert network_flags("10.3.0", 1) == 1 << 1
    with pytest.raises(EngineError, match=r"TensorRT 10\.3\.0 has no STRONGLY_TYPED network flag"):
        network_flags("10.3.0", None)
    # 11.x and later: always strongly typed, the flag is deprecated and ignored, or gone.
    assert network_flags("11.1.0", 0) == 0
    assert network_flags("12.0.0", None) == 0


# --- engine files given by the user -------------------------------------------------------------


def test_a_missing_or_corrupt_engine_file_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(EngineError, match=r"nope.engine: no such engine file"):
        Predictor(tmp_path / "nope.engine", backend="tensorrt")
    (tmp_path / "bad.engine").write_bytes(b"\x00" * 100)
    with pytest.raises(EngineError, match=r"bad.engine: not an rt_panoptic_ros engine file"):
        Predictor(tmp_path / "bad.engine", backend="tensorrt")
    assert build_engine_main([str(tmp_path / "bad.engine")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        f"rt-panoptic-build-engine: error: {tmp_path / 'bad.engine'}: not an rt_panoptic_ros"
    )


def test_an_engine_file_from_another_gpu_or_tensorrt_is_refused(tmp_path):
    """Given directly (not in a cache) it cannot be rebuilt: one line says what to do."""
    check_engine_runs_here(KEY, KEY.gpu, KEY.tensorrt, "m.engine")
    message = (
        r"m.engine: built for another GPU 'NVIDIA H100 80GB HBM3' -> 'Orin'; TensorRT '10.3.0' -> '10.8.0': "
        r"build it again here \(rt-panoptic-build-engine"
    )
    with pytest.raises(EngineError, match=message):
        check_engine_runs_here(KEY, "Orin", "10.8.0", "m.engine")


def test_an_engine_file_carries_its_config_and_input_size(tmp_path):
    path = tmp_path / "m.engine"
    write_engine_file(path, KEY, CFG, b"engine")
    engine = read_engine_file(path)
    assert engine.cfg.model == CFG.model and engine.key.input_shape == (1, 3, 512, 1024)


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here: test_gpu.py runs its engines instead")
def test_without_tensorrt_the_backend_says_so(tmp_path, capsys):
    model = save_checkpoint(rigged_model(), tmp_path / "m.pt")
    with pytest.raises(EngineError, match="the tensorrt Python package is not installed"):
        Predictor(model, backend="tensorrt", input_size=(128, 256))
    assert build_engine_main([str(model), "--height", "128", "--width", "256"]) == EXIT_ERROR
    assert capsys.readouterr().err.startswith(
        "rt-panoptic-build-engine: error: tensorrt backend: the tensorrt"
    )
    for option in ("--calibration-dir", "--calib"):  # the old spelling still parses
        argv = [str(model), "--precision", "int8", option, str(tmp_path), "--height", "128", "--width", "256"]
        assert build_engine_main(argv) == EXIT_ERROR
        assert "the tensorrt Python package is not installed" in capsys.readouterr().err
