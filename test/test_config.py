"""Config: presets, dataclasses.replace, YAML round trip, and named errors."""

from __future__ import annotations

import dataclasses
import re

import pytest

from rt_panoptic_ros.config import PRESETS, Config, DecoderConfig, load_yaml, preset, save_yaml, settings
from rt_panoptic_ros.errors import ConfigError


@pytest.mark.parametrize("name", PRESETS)
def test_yaml_round_trip(name, tmp_path):
    cfg = preset(name)
    save_yaml(cfg, tmp_path / "cfg.yaml")
    assert load_yaml(tmp_path / "cfg.yaml") == cfg
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_replace_as_design_says():
    cfg = preset("tri_cityscapes")
    cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, stuff_area=0))
    assert cfg.decoder.stuff_area == 0
    assert set(f.name for f in dataclasses.fields(cfg.decoder)) == {
        "pre_nms_thresh", "pre_nms_top_n", "nms_thresh", "max_detections", "mask_thresh",
        "overlap_threshold", "stuff_area", "iou_variant", "instance_score_thresh", "box_map_background",
    }  # fmt: skip


def test_tri_preset_matches_checkpoint_layout():
    cfg = preset("tri_cityscapes")
    assert cfg.model.backbone == "resnet50"
    assert cfg.dataset.num_classes == 19
    assert cfg.dataset.thing_ids == tuple(range(11, 19))
    assert cfg.input.channel_order == "bgr"
    assert cfg.input.pixel_mean == (102.9801, 115.9465, 122.7717)
    assert (cfg.model.semantic_channels, cfg.model.localization_channels) == (128, 256)
    assert cfg.decoder.iou_variant == "tri"
    assert cfg.decoder.box_map_background == "tri"  # the original code's box map rule


def test_partial_yaml_takes_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("decoder:\n  mask_thresh: 0.5\n")
    cfg = load_yaml(tmp_path / "c.yaml")
    assert cfg.decoder.mask_thresh == 0.5
    assert cfg.model == Config().model


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "decoder:\n  mask_tresh: 0.5\n",
            "decoder.mask_tresh: unknown key; did you mean decoder.mask_thresh",
        ),
        ("modle:\n  fpn_channels: 8\n", "modle: unknown key; did you mean model?"),
        ("decoder:\n  mask_thresh: high\n", "decoder.mask_thresh: expected a number"),
        ("decoder:\n  mask_thresh: 1.5\n", "decoder.mask_thresh: 1.5, expected a value in [0, 1]"),
        ("model:\n  backbone: vgg16\n", "model.backbone: 'vgg16', expected one of"),
        ("input:\n  height: 100\n", "input.height: 100, expected 0 or a multiple of 128"),
        ("input:\n  pixel_mean: [1, 2]\n", "input.pixel_mean: expected 3 values, got 2"),
        ("dataset:\n  thing_ids: [30]\n", "dataset.thing_ids: [30] outside 0..18"),
        ("decoder:\n  iou_variant: giou\n", "decoder.iou_variant: 'giou', expected one of"),
        ("- just a list\n", "expected a mapping, got list"),
        ("model: {backbone: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml_names_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_yaml_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")


def test_every_config_field_says_what_it_is():
    from rt_panoptic_ros.training.train_config import TrainConfig

    for info in settings(TrainConfig) + settings(Config):
        assert info.help, f"{info.key}: declare it with setting(default, help, ...)"


def test_a_decoder_field_is_described_and_bounded_once():
    """The node's decoder.* parameters take description and range from the config field: a
    value one of them refuses, the other refuses too."""
    from rt_panoptic_ros.ros.parameters import check_value, decoder_parameters

    specs = {s.name: s for s in decoder_parameters(DecoderConfig())}
    for info in settings(DecoderConfig, "decoder."):
        spec = specs[info.key]
        assert (spec.description, spec.low, spec.high) == (info.help, info.low, info.high)
        if info.high is not None:
            too_big = info.high + (1 if info.hint is int else 0.5)
            assert check_value(spec, too_big) is not None
            with pytest.raises(ConfigError, match=re.escape(f"{info.key}: {too_big}, expected a value in")):
                Config.from_dict({"decoder": {info.name: too_big}})


def test_the_configuration_page_is_current():
    """docs/configuration.md is generated from the fields: `python tools/config_docs.py`."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("config_docs", ROOT / "tools" / "config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PAGE.read_text() == module.page(), "run: python tools/config_docs.py"


def test_overrides_are_checked_like_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("decoder:\n  mask_thresh: 0.5\n")
    assert load_yaml(path, ["decoder.stuff_area=10"]).decoder.stuff_area == 10
    with pytest.raises(
        ConfigError, match=r"decoder\.stuf_area: unknown key; did you mean decoder\.stuff_area"
    ):
        load_yaml(path, ["decoder.stuf_area=10"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_yaml(path, ["decoder.stuff_area"])
