"""Model files: save/load round trip, TRI conversion parity, and every bad-file case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TRI_REFERENCE, run_cli, tiny_config

from rt_panoptic_ros import load_model
from rt_panoptic_ros.errors import CheckpointError
from rt_panoptic_ros.model import RTPanoNet, save_checkpoint
from rt_panoptic_ros.model.checkpoint import load_checkpoint

FIXTURE = TRI_REFERENCE / "fixture_seed1_256x512.npz"
LEVELS = 5


def outputs_by_fixture_name(out) -> dict[str, np.ndarray]:
    """HeadOutputs flattened under the fixture's (and the ONNX export's) names."""
    named = {"semantic_logits": out.semantic_logits, "levelness_logits": out.levelness_logits}
    for i in range(LEVELS):
        named[f"box_cls_{i}"] = out.box_cls[i]
        named[f"box_reg_{i}"] = out.box_reg[i]
        named[f"centerness_{i}"] = out.centerness[i]
    return {k: v.detach().cpu().numpy() for k, v in named.items()}


def test_converted_tri_model_reproduces_the_original(tri_model_file):
    """Every one of the 17 arrays of the fixture within relative error 1e-4."""
    fixture = np.load(FIXTURE)
    model = load_model(tri_model_file)
    image = torch.from_numpy(fixture["image_rgb"]).permute(2, 0, 1)[None].contiguous()
    with torch.no_grad():
        ours = outputs_by_fixture_name(model(image))
    expected_names = [k for k in fixture.files if k != "image_rgb"]
    assert sorted(ours) == sorted(expected_names) and len(ours) == 17
    for name in expected_names:
        reference = fixture[name]
        assert ours[name].shape == reference.shape, name
        error = np.abs(ours[name] - reference).max() / np.abs(reference).max()
        assert error <= 1e-4, f"{name}: relative error {error:.2e}"


def test_converted_model_is_self_describing(tri_model_file):
    data = load_checkpoint(tri_model_file)
    assert data["config"]["model"]["backbone"] == "resnet50"
    assert data["config"]["dataset"]["class_names"][11] == "person"
    assert data["meta"]["converted_from"] == "tri"


def test_load_model_gives_identical_outputs(tmp_path):
    net = RTPanoNet(tiny_config()).eval()
    path = save_checkpoint(net, tmp_path / "m.pt", meta={"note": "test"})
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.cfg == net.cfg
    image = torch.randint(0, 256, (1, 3, 128, 256), dtype=torch.uint8)
    with torch.no_grad():
        a, b = outputs_by_fixture_name(net(image)), outputs_by_fixture_name(loaded(image))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    net = RTPanoNet(tiny_config())
    save_checkpoint(net, tmp_path / "m.pt")
    save_checkpoint(net, tmp_path / "m.pt")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def bad_files(tmp_path, tri_weights):
    """(path, expected message fragment) for each kind of bad model file."""
    net = RTPanoNet(tiny_config())
    state = net.state_dict()
    cases = {}
    cases["missing"] = (tmp_path / "missing.pt", "no such file")
    cases["directory"] = (tmp_path, "is a directory")
    (tmp_path / "text.pt").write_text("hello, not a model\n")
    cases["text"] = (tmp_path / "text.pt", "not a PyTorch checkpoint")
    (tmp_path / "truncated.pt").write_bytes((tri_weights).read_bytes()[:5000])
    cases["truncated"] = (tmp_path / "truncated.pt", "not a PyTorch checkpoint")
    cases["bare"] = (tri_weights, "a bare state dict, not an rt_panoptic_ros checkpoint")
    torch.save({"weights": [1, 2]}, tmp_path / "other.pt")
    cases["other"] = (tmp_path / "other.pt", "not an rt_panoptic_ros checkpoint (no 'format' entry)")

    def variant(name, mutate):
        saved = save_checkpoint(net, tmp_path / f"{name}.pt")
        data = torch.load(saved, weights_only=True)
        mutate(data)
        torch.save(data, saved)
        return saved

    first = next(iter(state))
    cases["missing_keys"] = (
        variant("missing_keys", lambda d: d["model"].pop(first)),
        f"1 missing key(s): {first}",
    )
    cases["unexpected_keys"] = (
        variant("unexpected_keys", lambda d: d["model"].update(extra=torch.zeros(1))),
        "1 unexpected key(s): extra",
    )
    cases["misshaped"] = (
        variant("misshaped", lambda d: d["model"].update({"head.box_cls.weight": torch.zeros(3, 3)})),
        "mis-shaped key(s): head.box_cls.weight [3, 3] (expected [8, 16, 3, 3])",
    )
    cases["bad_config"] = (
        variant("bad_config", lambda d: d["config"]["model"].update(backbone="vgg")),
        "config: model.backbone: 'vgg', expected one of",
    )
    cases["newer"] = (variant("newer", lambda d: d.update(format_version=99)), "format version 99")
    return cases


def test_every_bad_file_is_one_clear_error(tmp_path, tri_weights):
    for name, (path, message) in bad_files(tmp_path, tri_weights).items():
        with pytest.raises(CheckpointError) as info:
            load_model(path)
        text = str(info.value)
        assert message in text, f"{name}: {text}"
        assert str(path) in text, f"{name}: the file is not named: {text}"
        assert "\n" not in text, name


def test_many_missing_keys_are_summarised(tmp_path):
    net = RTPanoNet(tiny_config())
    path = save_checkpoint(net, tmp_path / "m.pt")
    data = torch.load(path, weights_only=True)
    data["model"] = {k: v for k, v in data["model"].items() if not k.startswith("head.")}
    torch.save(data, path)
    with pytest.raises(
        CheckpointError, match=r"missing key\(s\): head\.\S+, head\.\S+, head\.\S+ and \d+ more"
    ):
        load_model(path)


def test_convert_cli_bad_input_is_one_line(tmp_path, tri_weights):
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 100)
    torch.save({"backbone.body.conv1.weight": torch.zeros(3)}, tmp_path / "partial.pth")
    cases = [
        ([str(tmp_path / "absent.pth")], "absent.pth: no such file"),
        ([str(tmp_path / "junk.pth")], "junk.pth: not a PyTorch checkpoint"),
        ([str(tmp_path / "partial.pth")], "weights do not fit the network"),
    ]
    for args, message in cases:
        result = run_cli("rt-panoptic-convert", "--from", "tri", *args, str(tmp_path / "out.pt"))
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("rt-panoptic-convert: error: ") and message in lines[-1], result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.pt").exists()


def test_saving_onto_a_directory_names_it(tmp_path):
    """Not the temporary file the write goes through."""
    from rt_panoptic_ros.model import RTPanoNet, save_checkpoint

    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        save_checkpoint(RTPanoNet(tiny_config()), tmp_path / "adir")
    assert caught.value.filename == str(tmp_path / "adir")
    assert [p.name for p in tmp_path.iterdir()] == ["adir"]  # no temporary file left
