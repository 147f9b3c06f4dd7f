"""ONNX export: a valid, named, self-describing graph with only ops TensorRT's parser takes."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from conftest import run_cli, small_tmpfs, tiny_config
from onnx import TensorProto, helper

from rt_panoptic_ros.cli import EXIT_ERROR, export_main
from rt_panoptic_ros.config import preset
from rt_panoptic_ros.errors import ConfigError, ExportError
from rt_panoptic_ros.model import RTPanoNet, save_checkpoint
from rt_panoptic_ros.runtime.export import (
    INPUT_NAME,
    OUTPUT_NAMES,
    check_onnx,
    config_of,
    export_onnx,
    export_proto,
    output_shapes,
    read_onnx,
    tensorrt_problems,
)
from rt_panoptic_ros.runtime.tensorrt_ops import (
    EXPORT_OPSET,
    TENSORRT_ONNX_OPS,
    TENSORRT_OPSETS,
    unsupported_ops,
)


@pytest.fixture(scope="module")
def small():
    """The small preset (ResNet-18) with random weights, exported at 128x256, batch 2."""
    torch.manual_seed(0)
    return RTPanoNet(preset("small_cityscapes")).eval()


@pytest.fixture(scope="module")
def small_export(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "small.onnx"
    lines = []
    report = export_onnx(small, path, 128, 256, batch=2, source_sha256="abc", progress=lines.append)
    return path, report, lines


def dims(value):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def test_static_export_is_a_valid_named_graph(small, small_export):
    path, report, lines = small_export
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert dims(proto.graph.input[0]) == [2, 3, 128, 256]
    expected = output_shapes(small.cfg, 2, 128, 256)
    assert [o.name for o in inferred.graph.output] == list(OUTPUT_NAMES) == list(expected)
    for output in inferred.graph.output:
        assert output.type.tensor_type.elem_type == TensorProto.FLOAT
        assert tuple(dims(output)) == expected[output.name]
    assert expected["box_cls_4"] == (2, 8, 1, 2) and expected["levelness_logits"] == (2, 6, 32, 64)
    # progress line first, then a report with the file's size and op count
    assert lines == [f"exporting resnet18 to {path} (2x3x128x256, fp32, opset 17) ..."]
    assert report.size_bytes == path.stat().st_size
    assert report.op_count == len(proto.graph.node) > 100
    assert f"{report.op_count} ops" in report.summary() and "MB" in report.summary()


def test_export_carries_its_config(small, small_export):
    path, _, _ = small_export
    proto, cfg = read_onnx(path)
    assert cfg.model == small.cfg.model and cfg.dataset == small.cfg.dataset
    assert (cfg.input.height, cfg.input.width) == (128, 256)  # a static export says its size
    assert {p.key: p.value for p in proto.metadata_props}["rt_panoptic_ros.source_sha256"] == "abc"


def test_opset_is_one_tensorrt_parses(small_export):
    proto = onnx.load(str(small_export[0]))
    versions = {o.domain: o.version for o in proto.opset_import}
    assert versions[""] == EXPORT_OPSET
    assert TENSORRT_OPSETS[0] <= EXPORT_OPSET <= TENSORRT_OPSETS[1]


def test_only_ops_tensorrt_supports(small_export):
    proto = onnx.load(str(small_export[0]))
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= TENSORRT_ONNX_OPS, unsupported_ops(ops)
    assert {"Conv", "InstanceNormalization", "Resize", "Exp", "Cast"} <= ops  # the graph is the network
    assert tensorrt_problems(proto) == []


def test_the_op_check_can_fail():
    """A graph with ops the parser lacks (Unique, a custom domain, cubic Resize) is refused."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Unique", ["x"], ["y"]),
        helper.make_node("Resize", ["x", "", "s"], ["r"], mode="cubic", name="resize"),
        helper.make_node("Swish", ["x"], ["z"], domain="com.example"),
    ]
    scales = helper.make_tensor("s", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(nodes, "bad", [x], [y, z], initializer=[scales])
    proto = helper.make_model(graph)
    problems = " | ".join(tensorrt_problems(proto))
    assert "does not support: Swish, Unique" in problems
    assert "custom op domain(s) ['com.example']" in problems
    assert "resize: Resize mode 'cubic'" in problems
    assert unsupported_ops(["Conv", "Unique", "NonZero"]) == ["Unique"]


def test_check_names_a_wrong_output_shape(small, small_export):
    proto = onnx.load(str(small_export[0]))
    wrong = dataclasses.replace(small.cfg, dataset=dataclasses.replace(small.cfg.dataset, thing_ids=(11, 12)))
    with pytest.raises(
        ExportError, match=r"output box_cls_0 has shape \[2, 8, 16, 32\], expected \[2, 2, 16, 32\]"
    ):
        check_onnx(proto, wrong, (2, 128, 256), where="test")


def test_dynamic_export_has_symbolic_sizes():
    proto = export_proto(RTPanoNet(tiny_config()).eval(), 128, 128, dynamic=True)
    assert dims(proto.graph.input[0]) == ["batch", 3, "height", "width"]
    outputs = {o.name: dims(o) for o in proto.graph.output}
    assert outputs["semantic_logits"] == ["batch", 19, "height_8", "width_8"]
    assert outputs["centerness_4"] == ["batch", 1, "height_128", "width_128"]
    assert config_of(proto, "x").input.height == 0  # any size


def test_bad_sizes_are_refused(small, tmp_path):
    with pytest.raises(ConfigError, match="height: 100, expected a positive multiple of 128"):
        export_onnx(small, tmp_path / "x.onnx", 100, 256)
    assert not (tmp_path / "x.onnx").exists()


def test_unreadable_onnx_files_are_one_clear_error(tmp_path):
    with pytest.raises(ExportError, match="no such ONNX file"):
        read_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xff not protobuf" * 10)
    with pytest.raises(ExportError, match=r"junk.onnx: not an ONNX file"):
        read_onnx(tmp_path / "junk.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    foreign = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [x]))
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ExportError, match=r"no rt_panoptic_ros\.config metadata"):
        read_onnx(tmp_path / "foreign.onnx")


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(RTPanoNet(tiny_config()), tmp_path_factory.mktemp("tiny") / "tiny.pt")


def test_export_cli(tiny_file, tmp_path):
    out = tmp_path / "tiny.onnx"
    result = run_cli("rt-panoptic-export", str(tiny_file), "--output", str(out), "--height", "128",
                     "--width", "256", "--dynamic")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("exporting resnet18 to")  # the progress line
    assert f"wrote {out}: " in result.stdout and " ops of " in result.stdout and " MB" in result.stdout
    proto, cfg = read_onnx(out)
    assert dims(proto.graph.input[0])[0] == "batch" and cfg.model == tiny_config().model
    # the exported graph computes what the network computes
    import onnxruntime as ort

    image = np.random.default_rng(0).integers(0, 256, (1, 3, 256, 128), dtype=np.uint8)  # not the traced size
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": image})
    torch.manual_seed(0)
    with torch.no_grad():
        want = RTPanoNet(tiny_config()).eval()(torch.from_numpy(image))
    np.testing.assert_allclose(got[0], want.semantic_logits.numpy(), rtol=1e-4, atol=1e-5)


def test_export_into_a_directory_names_the_output(tiny_file, tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    target = tmp_path / "adir"
    assert export_main([str(tiny_file), "--height", "128", "--width", "128", "--output", str(target)]) == 1
    expected = f"{target}: is a directory, expected the name of the .onnx file to write"
    assert capsys.readouterr().err == f"rt-panoptic-export: error: {expected}\n"


def test_export_onto_a_read_only_file_system_names_the_output(tiny_file, tmp_path, capsys):
    with small_tmpfs(tmp_path / "ro", "ro,size=64k") as disk:
        target = disk / "x.onnx"
        assert (
            export_main([str(tiny_file), "--height", "128", "--width", "128", "--output", str(target)]) == 1
        )
        err = capsys.readouterr().err
        assert err.endswith(f"rt-panoptic-export: error: {target}: Read-only file system\n")
        assert ".tmp" not in err


def test_atomic_write_names_the_path_not_its_temporary_file(tmp_path):
    from rt_panoptic_ros.runtime.files import atomic_write_bytes

    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        atomic_write_bytes(tmp_path / "adir", b"x")
    assert caught.value.filename == str(tmp_path / "adir")
    (tmp_path / "afile").write_text("a file where a folder would be needed")
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(tmp_path / "afile" / "x.onnx", b"x")
    assert caught.value.filename == str(tmp_path / "afile" / "x.onnx")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.pt", "--height", "128", "--width", "128"], "missing.pt: no such file"),
        (["junk.pt", "--height", "128", "--width", "128"], "junk.pt: not a PyTorch checkpoint"),
        (["MODEL", "--height", "100", "--width", "128"], "height: 100, expected a positive multiple of 128"),
        (["MODEL"], "--height / --width: needed, the model file has no input size"),
    ],
)
def test_export_cli_errors_are_one_line(tiny_file, tmp_path, monkeypatch, capsys, args, message):
    """The console script's function itself, in-process (the script is run above)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    args = [str(tiny_file) if a == "MODEL" else a for a in args]
    assert export_main([*args, "--output", str(tmp_path / "x.onnx")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rt-panoptic-export: error: ")
    assert message in err
    assert not (tmp_path / "x.onnx").exists()
