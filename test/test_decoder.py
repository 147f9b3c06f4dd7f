"""The panoptic decoder on hand-built head outputs with known answers (paper Sec. 3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scenes import CAR, PERSON, ROAD, SKY, THINGS, Obj, batch, centre_seed, make_outputs, scene_config

from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.panoptic import VOID, decode
from rt_panoptic_ros.panoptic.boxes import pixel_query_iou
from rt_panoptic_ros.panoptic.fusion import fuse
from rt_panoptic_ros.panoptic.masks import select_queries

CAR_BOX = (32, 160, 96, 224)
PERSON_BOX = (160, 144, 224, 240)


def box_area(box):
    return (box[2] - box[0]) * (box[3] - box[1])


def two_objects(**kwargs):
    cx, cy = centre_seed(CAR_BOX)
    px, py = centre_seed(PERSON_BOX)
    return [
        Obj(CAR_BOX, CAR, seeds=[(cx, cy), (cx + 1, cy), (cx, cy + 1)], **kwargs),  # 3 duplicates
        Obj(PERSON_BOX, PERSON, seeds=[(px, py), (px - 1, py)], logit=5.0),
    ]


def interior(box, margin=2):
    """The box shrunk by ``margin`` pixels: where bilinear reads cannot round anything off."""
    x1, y1, x2, y2 = box
    return slice(y1 + margin, y2 - margin), slice(x1 + margin, x2 - margin)


def test_duplicates_removed_and_masks_from_the_box_map():
    result = decode(make_outputs(256, 256, two_objects()), scene_config(), (256, 256))[0]
    assert [s.category_id for s in result.segments] == [CAR, PERSON]  # by decreasing score
    assert [s.id for s in result.segments] == [1, 2]
    car, person = result.segments
    assert car.score > person.score > 0
    for segment, box in ((car, CAR_BOX), (person, PERSON_BOX)):
        assert segment.bbox == tuple(float(v) for v in box)
        # Full resolution: the box's pixels, but for its four corners, which the bilinear
        # mask probability rounds off (a square mask of stride-4 cells has no sharp corner).
        assert box_area(box) - 16 <= segment.area < box_area(box)
        assert segment.area == int((result.instance == segment.id).sum())
        assert (result.instance[interior(box)] == segment.id).all()
        assert (result.semantic[interior(box)] == segment.category_id).all()
    assert int((result.instance > 0).sum()) == car.area + person.area
    stuff = result.instance == 0
    assert set(torch.unique(result.semantic[stuff]).tolist()) <= {ROAD, SKY, VOID}
    assert result.semantic.dtype == torch.uint8 and result.instance.dtype == torch.uint8


def test_instance_map_is_the_smallest_integer_type_that_holds_max_detections():
    outputs = make_outputs(256, 256, two_objects())
    maps = {}
    for limit, dtype in ((255, torch.uint8), (256, torch.int16), (10000, torch.int16)):
        cfg = scene_config()
        cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, max_detections=limit))
        result = decode(outputs, cfg, (200, 190))[0]
        assert result.instance.dtype == dtype
        maps[limit] = result.instance.long()
    assert torch.equal(maps[255], maps[256]) and torch.equal(maps[255], maps[10000])


def test_output_matches_image_size_and_crops_the_padding():
    result = decode(make_outputs(256, 256, two_objects()), scene_config(), (200, 190))[0]
    assert result.semantic.shape == result.instance.shape == (200, 190)
    person = next(s for s in result.segments if s.category_id == PERSON)
    x1, y1, _, _ = PERSON_BOX
    assert person.bbox == (float(x1), float(y1), 190.0, 200.0)  # clipped by the crop
    assert person.area == int((result.instance == person.id).sum())
    assert (result.instance[y1 + 2 :, x1 + 2 :] == person.id).all()


def test_no_candidates_gives_stuff_and_void_only():
    objects = [Obj(CAR_BOX, CAR), Obj(PERSON_BOX, PERSON)]  # no seeds: nothing fires
    result = decode(make_outputs(256, 256, objects), scene_config(), (256, 256))[0]
    assert result.segments == []
    assert int(result.instance.abs().sum()) == 0
    # Thing-class pixels that no instance took are void.
    assert (result.semantic[interior(CAR_BOX)] == VOID).all()
    assert set(torch.unique(result.semantic).tolist()) == {ROAD, SKY, VOID}


def test_orphan_thing_pixels_become_void():
    objects = two_objects()
    objects[1].seeds = []  # the person is segmented semantically but never detected
    result = decode(make_outputs(256, 256, objects), scene_config(), (256, 256))[0]
    assert [s.category_id for s in result.segments] == [CAR]
    assert (result.semantic[interior(PERSON_BOX)] == VOID).all()
    x1, y1, x2, y2 = PERSON_BOX
    assert (result.instance[y1:y2, x1:x2] == 0).all()


@pytest.mark.parametrize(("extra", "kept"), [(-1, True), (0, True), (1, False)])
def test_stuff_area_rule_both_ways(extra, kept):
    semantic = torch.full((256, 256), ROAD, dtype=torch.long)
    semantic[40:56, 40:56] = SKY  # a 16 x 16 patch of sky, its corners rounded at full resolution
    out = make_outputs(256, 256, [], semantic=semantic)
    area = int((decode(out, scene_config(stuff_area=0), (256, 256))[0].semantic == SKY).sum())
    assert 256 - 32 <= area <= 256  # stride-8 corners round off a few pixels each
    result = decode(out, scene_config(stuff_area=area + extra), (256, 256))[0]
    assert int((result.semantic == SKY).sum()) == (area if kept else 0)
    assert (result.semantic[100:] == ROAD).all()


def test_max_detections_keeps_the_best():
    boxes = [(x, 16, x + 32, 48) for x in range(0, 256, 64)]  # 4 separate cars
    objects = [Obj(b, CAR, seeds=[centre_seed(b)], logit=1.0 + k) for k, b in enumerate(boxes)]
    result = decode(make_outputs(256, 256, objects), scene_config(max_detections=2), (256, 256))[0]
    assert [s.bbox[0] for s in result.segments] == [192.0, 128.0]  # highest logits first


def test_nms_keeps_overlapping_boxes_below_its_threshold():
    a, b = (32, 32, 96, 96), (64, 32, 128, 96)  # IoU 1/3
    # Seeds where only one box lies: P3 columns 5 (pixel 44) and 14 (pixel 116).
    objects = [Obj(a, CAR, seeds=[(5, 8)]), Obj(b, CAR, seeds=[(14, 8)], logit=5.0)]
    out = make_outputs(256, 256, objects)
    cfg = scene_config()
    assert (
        len(select_queries(out.box_cls, out.box_reg, out.centerness, [(256, 256)], cfg.decoder).scores) == 2
    )
    tight = scene_config(nms_thresh=0.3)
    assert (
        len(select_queries(out.box_cls, out.box_reg, out.centerness, [(256, 256)], tight.decoder).scores) == 1
    )


def test_candidate_boxes_use_the_level_locations():
    """A P4 (stride 16) location (3, 2) sits at pixel (8 + 48, 8 + 32) = (56, 40)."""
    out = make_outputs(256, 256, [])
    out.box_cls[1][0, 0, 2, 3] = HIGH = 10.0
    out.box_reg[1][0, :, 2, 3] = torch.tensor([10.0, 20.0, 30.0, 40.0])
    q = select_queries(out.box_cls, out.box_reg, out.centerness, [(256, 256)], scene_config().decoder)
    assert q.boxes.tolist() == [[46.0, 20.0, 86.0, 80.0]]
    assert q.labels.tolist() == [0] and q.scores.item() == pytest.approx(
        torch.sigmoid(torch.tensor(HIGH)).item() * 0.5
    )


def test_iou_variants_by_hand():
    q = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    p = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    iou = pixel_query_iou(p, q, "iou")[:, 0].tolist()
    tri = pixel_query_iou(p, q, "tri")[:, 0].tolist()
    assert iou == pytest.approx([50 / 150, 0.0])
    # (I + 1) / (U + 1) - (G - U) / G
    assert tri == pytest.approx([51 / 151 - 0.0, 1 / 201 - (300 - 200) / 300], rel=1e-5)


def test_tri_variant_decodes_the_scene_alike():
    out = make_outputs(256, 256, two_objects())
    a = decode(out, scene_config(iou_variant="iou"), (256, 256))[0]
    b = decode(out, scene_config(iou_variant="tri"), (256, 256))[0]
    assert [s.area for s in a.segments] == [s.area for s in b.segments]
    assert torch.equal(a.instance, b.instance)


def pairs(masks):
    """Dense ``[P, K]`` bool masks as the (cell, instance) pairs ``fuse`` takes."""
    cells, instances = masks.nonzero().unbind(1)
    return cells, instances


def test_overlap_rule():
    """Mask 1 overlaps mask 0 by 3 of its 7 cells (0.43)."""
    masks = torch.zeros(10, 2, dtype=torch.bool)  # [P, K]
    masks[0:6, 0] = True
    masks[3:10, 1] = True
    args = (*pairs(masks), torch.tensor([CAR, CAR]), torch.full((10,), ROAD), is_thing(), torch.ones(10))
    lenient = fuse(*args, overlap_threshold=0.5, stuff_area=0)
    assert lenient.kept.tolist() == [0, 1]
    assert lenient.instance.tolist() == [1] * 6 + [2] * 4  # the later one keeps its free cells
    assert lenient.areas.tolist() == [6.0, 4.0]
    strict = fuse(*args, overlap_threshold=0.4, stuff_area=0)
    assert strict.kept.tolist() == [0]
    assert strict.instance.tolist() == [1] * 6 + [0] * 4
    assert strict.semantic.tolist() == [CAR] * 6 + [ROAD] * 4


def test_overlap_rule_is_sequential():
    """A dropped instance covers nothing: C overlaps only the dropped B, so C stays."""
    masks = torch.zeros(12, 3, dtype=torch.bool)  # [P, K]
    masks[0:4, 0] = True  # A
    masks[2:8, 1] = True  # B: 2 of 6 under A -> 0.33 > 0.3, dropped
    masks[4:8, 2] = True  # C: under B only
    classes = torch.tensor([CAR] * 3)
    fused = fuse(*pairs(masks), classes, torch.full((12,), ROAD), is_thing(), torch.ones(12), 0.3, 0)
    assert fused.kept.tolist() == [0, 2]
    assert fused.instance.tolist() == [1] * 4 + [2] * 4 + [0] * 4


def test_overlap_rule_matches_the_sequential_loop():
    """Random masks with long chains of drops: the fixed point equals the plain loop."""
    generator = torch.Generator().manual_seed(0)
    for trial in range(20):
        cells, num = 60, 12
        masks = torch.rand(cells, num, generator=generator) < 0.25
        weights = torch.randint(1, 17, (cells,), generator=generator).float()
        fused = fuse(
            *pairs(masks), torch.full((num,), CAR), torch.full((cells,), ROAD), is_thing(), weights, 0.5, 0
        )
        taken = torch.zeros(cells, dtype=torch.bool)
        expected = []
        for j in range(num):  # detectron2's loop, the definition of the rule
            area = float(weights[masks[:, j]].sum())
            if area == 0 or float(weights[masks[:, j] & taken].sum()) / area > 0.5:
                continue
            expected.append(j)
            taken |= masks[:, j]
        assert fused.kept.tolist() == expected, trial


def is_thing():
    flags = torch.zeros(4, dtype=torch.bool)
    flags[list(THINGS)] = True
    return flags


def test_batch_equals_single_images():
    first = make_outputs(256, 256, two_objects())
    second = make_outputs(256, 256, [Obj((0, 0, 64, 64), PERSON, seeds=[(4, 4)])])
    cfg = scene_config()
    sizes = [(256, 256), (250, 200)]
    batched = decode(batch(first, second), cfg, sizes)
    singles = [decode(first, cfg, sizes[0])[0], decode(second, cfg, sizes[1])[0]]
    for a, b in zip(batched, singles, strict=True):
        assert torch.equal(a.semantic, b.semantic) and torch.equal(a.instance, b.instance)
        assert a.segments == b.segments
    assert len(batched[1].segments) == 1


def test_image_size_must_fit_the_input():
    out = make_outputs(256, 256, [])
    with pytest.raises(InputError, match=r"\(300, 256\) does not fit the network input 256x256"):
        decode(out, scene_config(), (300, 256))
    with pytest.raises(InputError, match="2 sizes for a batch of 1"):
        decode(out, scene_config(), [(256, 256), (256, 256)])


def test_converted_tri_model_decodes_the_fixture(tri_model_file):
    from conftest import TRI_REFERENCE

    from rt_panoptic_ros import load_model

    model = load_model(tri_model_file)
    image = np.load(TRI_REFERENCE / "fixture_seed1_256x512.npz")["image_rgb"]
    with torch.no_grad():
        out = model(torch.from_numpy(image).permute(2, 0, 1)[None].contiguous())
    result = decode(out, model.cfg, (256, 512))[0]
    assert result.semantic.shape == (256, 512)
    assert len(result.segments) <= model.cfg.decoder.max_detections
    ids = set(torch.unique(result.instance).tolist())
    assert ids <= {0} | {s.id for s in result.segments}
    classes = set(torch.unique(result.semantic).tolist())
    assert classes <= set(range(19)) | {VOID} and classes - {VOID}
