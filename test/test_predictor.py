"""Predictor: numpy RGB of any size in, a PanopticResult at that size out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import rigged_model

from rt_panoptic_ros import Predictor
from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.image_fit import fit
from rt_panoptic_ros.model import save_checkpoint
from rt_panoptic_ros.panoptic import VOID, decode


@pytest.fixture(scope="module")
def predictor():
    return Predictor(rigged_model())


def random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_any_size_gives_maps_at_that_size(predictor):
    for h, w in ((130, 250), (256, 256), (77, 301)):
        result = predictor(random_image(h, w))
        assert result.semantic.shape == result.instance.shape == (h, w)
        assert result.semantic.device.type == "cpu"
        ids = set(torch.unique(result.instance).tolist())
        assert ids <= {0} | {s.id for s in result.segments}
        for s in result.segments:
            assert s.area == int((result.instance == s.id).sum())
            assert 0 <= s.bbox[0] < s.bbox[2] <= w and 0 <= s.bbox[1] < s.bbox[3] <= h


def test_rigged_model_finds_instances_and_stuff(predictor):
    result = predictor(random_image(256, 384))
    assert len(result.segments) > 3
    values = set(torch.unique(result.semantic).tolist())
    assert 0 in values  # road (stuff)


def test_equals_network_plus_decoder_on_padded_input(predictor):
    """What the Predictor does is exactly: pad to 128, run, decode, crop."""
    image = random_image(200, 300)
    padded = np.zeros((256, 384, 3), np.uint8)
    padded[:200, :300] = image
    net = predictor.backend.model
    with torch.no_grad():
        out = net(torch.from_numpy(padded).permute(2, 0, 1)[None])  # NHWC memory, as the Predictor
    expected = decode(out, predictor.cfg, (200, 300))[0]
    result = predictor(image)
    assert torch.equal(result.semantic, expected.semantic)
    assert torch.equal(result.instance, expected.instance)
    assert_same_segments(result.segments, expected.segments)


def assert_same_segments(a, b):
    """Equal segments; scores to float32 noise (two runs of the network may differ in the last bit)."""
    assert [dataclasses.replace(s, score=0.0) for s in a] == [dataclasses.replace(s, score=0.0) for s in b]
    assert [s.score for s in a] == pytest.approx([s.score for s in b], rel=1e-5)


def test_batch_equals_single_calls(predictor):
    images = [random_image(200, 300, 1), random_image(200, 300, 2)]
    batched = predictor.predict_batch(images)
    for image, result in zip(images, batched, strict=True):
        single = predictor(image)
        assert torch.equal(single.semantic, result.semantic)
        assert torch.equal(single.instance, result.instance)
        assert_same_segments(single.segments, result.segments)
    assert predictor.predict_batch([]) == []


def test_batch_of_mixed_sizes(predictor):
    """Images of different sizes share one padded input (GroupNorm then sees the padding)."""
    results = predictor.predict_batch([random_image(200, 300), random_image(100, 64)])
    assert [tuple(r.semantic.shape) for r in results] == [(200, 300), (100, 64)]


def test_configured_input_size_resizes_and_comes_back(predictor):
    cfg = dataclasses.replace(
        predictor.cfg, input=dataclasses.replace(predictor.cfg.input, height=128, width=256)
    )
    small = Predictor(predictor.backend.model, cfg=cfg)
    image = random_image(300, 500)
    result = small(image)
    assert result.semantic.shape == (300, 500)
    for s in result.segments:
        assert s.area == int((result.instance == s.id).sum()) > 0
    assert int(result.instance.max()) == len(result.segments)


def test_loads_a_model_file(tmp_path):
    net = rigged_model()
    path = save_checkpoint(net, tmp_path / "rigged.pt")
    a, b = Predictor(path), Predictor(net)
    image = random_image(128, 128)
    assert torch.equal(a(image).instance, b(image).instance)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((64, 64, 3), np.float32), r"expected uint8 \[H, W, 3\] RGB, got float32 \[64, 64, 3\]"),
        (np.zeros((64, 64), np.uint8), r"got uint8 \[64, 64\]"),
        (np.zeros((64, 64, 4), np.uint8), r"got uint8 \[64, 64, 4\]"),
        (np.zeros((0, 64, 3), np.uint8), "empty"),
        ("image.png", "expected a numpy array, got str"),
    ],
)
def test_bad_images_are_one_clear_error(predictor, image, message):
    with pytest.raises(InputError, match=message):
        predictor(image)


def test_void_is_255(predictor):
    result = predictor(random_image(128, 128))
    assert int(result.semantic.max()) <= VOID


def fit_reference(image: torch.Tensor, target: tuple[int, int]) -> torch.Tensor:
    """``fit`` as it was: the whole image to float32, then ``F.interpolate`` (the definition)."""
    h, w = image.shape[-2:]
    scale = min(target[0] / h, target[1] / w)
    size = (max(1, min(target[0], round(h * scale))), max(1, min(target[1], round(w * scale))))
    if size == (h, w):
        return image
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)
    return resized[0].round_().clamp_(0, 255).to(torch.uint8)


@pytest.mark.parametrize(
    "height, width",
    [(1, 1), (7, 3), (100, 200), (127, 255), (128, 256), (300, 50), (480, 640), (1080, 1920), (2000, 7)],
)
@pytest.mark.parametrize("target", [(128, 256), (512, 1024), (384, 640)])
def test_fit_equals_the_float_interpolation(height, width, target):
    """Within one level everywhere (float rounding order), equal at nearly every pixel."""
    generator = torch.Generator().manual_seed(height * 7919 + width)
    hwc = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
    image = hwc.permute(2, 0, 1)  # [3, H, W] over HWC memory, as the Predictor passes it
    expected, got = fit_reference(image, target), fit(image, target)
    assert got.shape == expected.shape and got.dtype == torch.uint8
    differ = (got.int() - expected.int()).abs()
    assert int(differ.max()) <= 1
    assert int((differ > 0).sum()) <= max(2, expected.numel() // 1000)
