"""The fast decoder against its definitions: a dense reference decoder and the original code.

``reference_decoder.py`` decides every pixel densely (bilinear reads of every query's mask
probability and of the semantic logits at every pixel, then a plain fusion loop). The fast
decoder must give identical maps and segments. Both compute the same bilinear arithmetic on
the same values; only the box map (``grid_sample`` at a few cells vs ``F.interpolate`` of whole
maps) and P_sem (``exp(l - logsumexp)`` vs ``softmax``) may differ in the last bit, which could
flip a pixel whose mask probability lies within ~1e-7 of the threshold: never seen in these
trials, so no tolerance is allowed.

``postprocess_fixture_256x512.npz`` holds head outputs, the original implementation's
settings, its detections after ``PanopticFromDenseBox.process`` and its full-resolution masks
and semantic argmax. Measured here: all 9 detections equal, every mask identical (per-mask IoU
1.0, 0 pixels differ), the semantic argmax identical (0 pixels differ).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TRI_REFERENCE
from reference_decoder import query_mask_probabilities, reference_decode, sample
from scenes import CAR, PERSON, Obj, centre_seed, make_outputs, random_outputs, scene_config

import rt_panoptic_ros.panoptic.band_runs as band_runs
import rt_panoptic_ros.panoptic.pixels as pixels_module
from rt_panoptic_ros.config import preset
from rt_panoptic_ros.model import HeadOutputs
from rt_panoptic_ros.panoptic import VOID, decode
from rt_panoptic_ros.panoptic.boxes import box_levels
from rt_panoptic_ros.panoptic.masks import select_queries


def assert_same(fast, reference):
    assert fast.semantic.shape == reference.semantic.shape
    assert torch.equal(fast.semantic.long(), reference.semantic), "semantic maps differ"
    assert torch.equal(fast.instance.long(), reference.instance), "instance maps differ"
    assert fast.segments == reference.segments


# (content in the input, original image size): no resize, cropped padding, up- and downscaled.
SIZES = [((128, 256), None), ((100, 230), (211, 333)), ((128, 256), (64, 128)), ((128, 200), (512, 800))]


@pytest.mark.parametrize("seed", range(6))
def test_fast_decoder_equals_the_reference_on_random_outputs(seed):
    generator = torch.Generator().manual_seed(seed)
    out = random_outputs(generator, 128, 256)
    cfg = scene_config(
        iou_variant=("iou", "tri")[seed % 2], box_map_background=("exclude", "tri")[seed // 2 % 2],
        mask_thresh=0.3, stuff_area=40, max_detections=40, instance_score_thresh=0.02 * (seed // 4),
    )  # fmt: skip
    for content, size in SIZES:
        fast = decode(out, cfg, content, size)[0]
        assert len(fast.segments) >= 3  # the trial exercises fusion
        assert_same(fast, reference_decode(out, cfg, content, size)[0])


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_decoder_equals_the_reference_with_cityscapes_classes(seed):
    """19 classes, things 11-18, the TRI preset's rules, an image 1.6x the network input."""
    cfg = preset("tri_cityscapes")
    cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, stuff_area=50, mask_thresh=0.2))
    out = random_outputs(torch.Generator().manual_seed(100 + seed), 128, 256, classes=19, things=8)
    fast = decode(out, cfg, (120, 256), (192, 410))[0]
    assert len(fast.segments) >= 3 and len(torch.unique(fast.semantic)) >= 5
    assert_same(fast, reference_decode(out, cfg, (120, 256), (192, 410))[0])


def test_fast_decoder_equals_the_reference_on_a_scene_with_overlaps():
    objects = [
        Obj((32, 32, 96, 96), CAR, seeds=[centre_seed((32, 32, 96, 96))]),
        Obj((64, 48, 128, 112), PERSON, seeds=[(14, 10)], logit=4.0),  # overlaps the car
        Obj((160, 64, 240, 200), CAR, seeds=[centre_seed((160, 64, 240, 200))], logit=2.0),
    ]
    out = make_outputs(256, 256, objects)
    for content, size in [((256, 256), None), ((250, 220), (500, 440)), ((256, 256), (97, 101))]:
        for background in ("exclude", "tri"):
            cfg = scene_config(box_map_background=background, stuff_area=100)
            assert_same(decode(out, cfg, content, size)[0], reference_decode(out, cfg, content, size)[0])


@pytest.mark.parametrize("seed", [0, 1])
def test_band_in_tiny_runs_equals_the_band_in_one_step(seed, monkeypatch):
    """The band of a huge image goes through its per-pixel steps in runs of blocks, with rule 1
    over (mask set, class) units counted across all runs: forced here with runs of a few
    blocks (semantic squares too), 100 queries (two membership words) and most instances
    dropped by overlap."""
    out = random_outputs(torch.Generator().manual_seed(seed), 128, 256)
    cfg = scene_config(
        iou_variant=("iou", "tri")[seed], mask_thresh=0.1, stuff_area=40, max_detections=100,
        overlap_threshold=0.3,
    )  # fmt: skip
    runs = []
    write_runs = band_runs.write_band_in_runs
    monkeypatch.setattr(band_runs, "write_band_in_runs", lambda *a: runs.append(a[2]) or write_runs(*a))
    content, size = [((128, 256), (300, 500)), ((100, 230), (211, 333))][seed]
    one_step = decode(out, cfg, content, size)[0]
    assert not runs and len(one_step.segments) >= 3
    for module, name in [(band_runs, "CHUNK_PIXELS"), (band_runs, "RUN_PIXELS"),
                         (pixels_module, "_CHUNK_PIXELS"), (pixels_module, "_RUN_PIXELS")]:  # fmt: skip
        monkeypatch.setattr(module, name, 3000)
    in_runs = decode(out, cfg, content, size)[0]
    assert len(list(runs.pop().chunks(3000))) > 10
    assert torch.equal(in_runs.semantic, one_step.semantic)
    assert torch.equal(in_runs.instance, one_step.instance)
    assert in_runs.segments == one_step.segments


def test_instance_score_thresh_drops_weak_detections_before_fusion():
    objects = [
        Obj((32, 32, 96, 96), CAR, seeds=[(8, 8)]),
        Obj((160, 32, 224, 96), CAR, seeds=[(24, 8)], logit=-1.0),
    ]
    out = make_outputs(256, 256, objects)
    scores = [s.score for s in decode(out, scene_config(), (256, 256))[0].segments]
    assert len(scores) == 2
    kept = decode(out, scene_config(instance_score_thresh=(scores[0] + scores[1]) / 2), (256, 256))[0]
    assert [s.score for s in kept.segments] == scores[:1]
    assert (kept.semantic[40:88, 168:216] == VOID).all()  # the dropped car's pixels: orphans


def test_box_map_background_rules():
    levelness = torch.randn(2, 6, 16, 32)
    exclude, tri = box_levels(levelness, "exclude"), box_levels(levelness, "tri")
    assert torch.equal(exclude, levelness.argmax(1))
    assert torch.equal(tri, levelness[:, 1:].argmax(1) + 1) and bool((tri > 0).all())
    assert torch.equal(tri[exclude > 0], exclude[exclude > 0])


def fixture():
    data = np.load(TRI_REFERENCE / "postprocess_fixture_256x512.npz")
    tensor = lambda k: torch.from_numpy(data[k])  # noqa: E731
    out = HeadOutputs(
        semantic_logits=tensor("semantic_logits"), levelness_logits=tensor("levelness_logits"),
        box_cls=[tensor(f"box_cls_{i}") for i in range(5)],
        box_reg=[tensor(f"box_reg_{i}") for i in range(5)],
        centerness=[tensor(f"centerness_{i}") for i in range(5)],
    )  # fmt: skip
    cfg = preset("tri_cityscapes")  # iou_variant and box_map_background "tri", as the original
    assert cfg.dataset.thing_ids == tuple(data["thing_semantic_ids"].tolist())
    decoder = dataclasses.replace(
        cfg.decoder, pre_nms_thresh=float(data["pre_nms_thresh"]), pre_nms_top_n=int(data["pre_nms_top_n"]),
        nms_thresh=float(data["nms_thresh"]), max_detections=int(data["fpn_post_nms_top_n"]),
        mask_thresh=float(data["mask_thresh"]),
    )  # fmt: skip
    return data, out, dataclasses.replace(cfg, decoder=decoder)


def test_queries_and_masks_equal_the_original_implementation():
    data, out, cfg = fixture()
    size = tuple(data["image_size"].tolist())
    q = select_queries(out.box_cls, out.box_reg, out.centerness, [size], cfg.decoder)
    torch.testing.assert_close(q.boxes, torch.from_numpy(data["tri_boxes"]))
    torch.testing.assert_close(q.scores, torch.from_numpy(data["tri_scores"]))
    assert (q.labels + 1).tolist() == data["tri_labels"].tolist()  # the original's labels are 1-based
    masks = sample(query_mask_probabilities(out, cfg, 0, q, size), size, size, 4) > cfg.decoder.mask_thresh
    original = torch.from_numpy(data["tri_masks"])
    for ours, theirs in zip(masks, original, strict=True):
        assert int((ours ^ theirs).sum()) == 0
    semantic = sample(out.semantic_logits[0], size, size, 8).argmax(0)
    assert np.array_equal(semantic.numpy(), data["tri_semantic_argmax"])


def test_fast_decoder_paints_the_original_masks():
    """With every mask kept (overlap 1, no stuff area), the instance map is the original's masks
    placed in score order, and every other pixel is the original's semantic argmax (void for
    thing classes)."""
    data, out, cfg = fixture()
    cfg = dataclasses.replace(
        cfg, decoder=dataclasses.replace(cfg.decoder, overlap_threshold=1.0, stuff_area=0)
    )
    size = tuple(data["image_size"].tolist())
    result = decode(out, cfg, size)[0]
    original = torch.from_numpy(data["tri_masks"])
    painted = torch.zeros(size, dtype=torch.long)
    k = 0
    for mask in original:
        if mask.any():
            k += 1
            painted[mask & (painted == 0)] = k
    assert k == len(result.segments) == 8
    assert torch.equal(result.instance.long(), painted)
    semantic = torch.from_numpy(data["tri_semantic_argmax"]).long()
    stuff = (painted == 0) & (semantic < 11)
    assert torch.equal(result.semantic.long()[stuff], semantic[stuff])
    assert bool((result.semantic[(painted == 0) & (semantic >= 11)] == VOID).all())
