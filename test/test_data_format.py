"""The COCO panoptic format layer: PNG ids, JSON checks, the category table, boxes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from rt_panoptic_ros.config import CITYSCAPES_CLASSES, DatasetMeta
from rt_panoptic_ros.errors import DatasetError, ImageFileError
from rt_panoptic_ros.image_io import id_to_rgb, read_panoptic_png, rgb_to_id, write_panoptic_png
from rt_panoptic_ros.image_io import read_rgb as read_image
from rt_panoptic_ros.image_io import write_rgb as write_image
from rt_panoptic_ros.training.data.panoptic_format import (
    Category,
    CategoryMap,
    load_panoptic_json,
    segment_boxes,
    segment_index,
)


def test_png_ids_round_trip_through_rgb_and_disk(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256**3, (7, 9)).astype(np.uint32)
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (7, 9, 3)
    assert rgb[0, 0].tolist() == [
        ids[0, 0] % 256,
        ids[0, 0] // 256 % 256,
        ids[0, 0] // 65536,
    ]  # R + 256 G + ...
    np.testing.assert_array_equal(rgb_to_id(rgb), ids)
    write_panoptic_png(tmp_path / "p.png", ids)
    back = read_panoptic_png(tmp_path / "p.png")
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, ids)


def test_image_is_read_as_rgb(tmp_path):
    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 0] = 200  # red
    write_image(tmp_path / "i.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "i.png"), image)


@pytest.mark.parametrize(
    "listed",
    [
        [26001, 7, 24, 33999],  # Cityscapes-style small ids: a direct table
        [16_000_000, 3, 7_777_777, 123_456],  # COCO-style 24-bit colours: a window of bits
        [(1 << 20) + 4096 * k for k in range(40)],  # equal low 12 bits: the window must move
    ],
)
def test_segment_index_maps_ids_to_positions(listed):
    rng = np.random.default_rng(1)
    position = rng.integers(-1, len(listed), (30, 40))
    ids = np.where(position >= 0, np.array(listed)[position.clip(0)], 0).astype(np.uint32)
    np.testing.assert_array_equal(segment_index(ids, listed, "x.png"), position)


@pytest.mark.parametrize("listed", [[7, 26001], [7, 16_000_000]])
@pytest.mark.parametrize("bad", [5, 40_000, 9_999_999])
def test_segment_index_names_an_unlisted_id(listed, bad):
    ids = np.full((4, 4), 7, np.uint32)
    ids[2, 3] = bad
    with pytest.raises(DatasetError, match=rf"^pan/a\.png: segment id\(s\) {bad} in the PNG are not listed"):
        segment_index(ids, listed, "pan/a.png")


def test_segment_boxes_are_tight_pixel_edge_boxes():
    rng = np.random.default_rng(2)
    index = rng.integers(-1, 4, (20, 30))
    index[index == 2] = 1  # segment 2 has no pixels
    boxes, areas = segment_boxes(index, 4)
    for k in range(4):
        ys, xs = np.nonzero(index == k)
        assert areas[k] == len(ys)
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(ys) else [0, 0, 0, 0]
        assert boxes[k].tolist() == expected


def test_unreadable_pngs_are_named(tmp_path):
    with pytest.raises(ImageFileError, match=r"missing\.png: panoptic PNG not found"):
        read_panoptic_png(tmp_path / "missing.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageFileError, match=r"corrupt\.png: cannot decode"):
        read_panoptic_png(tmp_path / "corrupt.png")
    cv2.imwrite(str(tmp_path / "grey.png"), np.zeros((3, 3), np.uint8))
    with pytest.raises(
        ImageFileError, match=r"grey\.png: panoptic PNG is 1-channel uint8, expected 8-bit RGB"
    ):
        read_panoptic_png(tmp_path / "grey.png")
    with pytest.raises(ImageFileError, match=r"nope\.jpg: image not found"):
        read_image(tmp_path / "nope.jpg")


GOOD = {
    "images": [{"id": 1, "file_name": "1.jpg", "height": 2, "width": 2}],
    "annotations": [
        {
            "image_id": 1,
            "file_name": "1.png",
            "segments_info": [{"id": 5, "category_id": 3, "iscrowd": 0, "area": 2}],
        }
    ],
    "categories": [{"id": 3, "name": "car", "isthing": 1}, {"id": 1, "name": "road", "isthing": 0}],
}


def _with(path, edit):
    data = json.loads(json.dumps(GOOD))
    edit(data)
    path.write_text(json.dumps(data))
    return path


def test_a_good_json_parses(tmp_path):
    parsed = load_panoptic_json(_with(tmp_path / "g.json", lambda d: None), ground_truth=True)
    (ann,) = parsed.annotations
    assert ann.image_id == 1 and ann.file_name == "1.png"
    assert ann.segments[0].id == 5 and ann.segments[0].area == 2 and not ann.segments[0].iscrowd
    assert [c.name for c in parsed.categories] == ["car", "road"]
    assert parsed.images[1]["file_name"] == "1.jpg"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("annotations"), r"g\.json: top level: missing field 'annotations'"),
        (lambda d: d.pop("categories"), r"g\.json: top level: missing field 'categories'"),
        (
            lambda d: d["annotations"][0].pop("segments_info"),
            r"g\.json: annotations\[0\]: missing field 'segments_info'",
        ),
        (
            lambda d: d["annotations"][0]["segments_info"][0].pop("category_id"),
            r"g\.json: annotations\[0\]\.segments_info\[0\]: missing field 'category_id'",
        ),
        (
            lambda d: d["annotations"][0]["segments_info"][0].update(id="5"),
            r"g\.json: annotations\[0\]\.segments_info\[0\]\.id: expected an integer, got '5'",
        ),
        (
            lambda d: d["annotations"][0]["segments_info"][0].update(id=0),
            r"segments_info\[0\]\.id: 0, expected 1\.\.256\^3-1 \(0 is VOID\)",
        ),
        (
            lambda d: d["annotations"][0]["segments_info"].append({"id": 5, "category_id": 1}),
            r"annotations\[0\]\.segments_info: duplicate segment id\(s\) \[5\]",
        ),
        (
            lambda d: d["annotations"].append(d["annotations"][0]),
            r"annotations\[1\]\.image_id: 1 repeats annotations\[0\]",
        ),
        (lambda d: d["categories"][0].update(isthing=2), r"categories\[0\]\.isthing: 2, expected 0 or 1"),
        (lambda d: d.update(annotations={}), r"g\.json: annotations: expected a list"),
    ],
)
def test_a_malformed_json_is_named_with_its_field(tmp_path, edit, message):
    with pytest.raises(DatasetError, match=message):
        load_panoptic_json(_with(tmp_path / "g.json", edit), ground_truth=True)


def test_a_prediction_json_needs_no_categories(tmp_path):
    path = _with(tmp_path / "p.json", lambda d: [d.pop("categories"), d.pop("images")])
    assert load_panoptic_json(path, ground_truth=False).categories == ()


def test_not_json_is_named(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON"):
        load_panoptic_json(tmp_path / "bad.json", ground_truth=True)
    with pytest.raises(DatasetError, match=r"none\.json: JSON file not found"):
        load_panoptic_json(tmp_path / "none.json", ground_truth=True)


def test_category_map_orders_by_dataset_id():
    cats = CategoryMap([Category(26, "car", True), Category(7, "road", False), Category(24, "person", True)])
    assert cats.to_contiguous == {7: 0, 24: 1, 26: 2}
    assert cats.contiguous([26, 7], "x").tolist() == [2, 0]
    assert cats.to_meta("toy") == DatasetMeta(
        name="toy", class_names=("road", "person", "car"), thing_ids=(1, 2), category_ids=(7, 24, 26)
    )
    with pytest.raises(DatasetError, match=r"^x: category_id 25 is not one of"):
        cats.contiguous([25], "x")
    with pytest.raises(DatasetError, match=r"duplicate id\(s\) \[7\]"):
        CategoryMap([Category(7, "a", False), Category(7, "b", False)])


def test_cityscapes_train_ids_give_the_tri_layout():
    """cityscapesscripts' --use-train-id categories map onto the TRI model's 19 classes."""
    from cityscapesscripts.helpers.labels import labels

    categories = [Category(lb.trainId, lb.name, lb.hasInstances) for lb in labels if not lb.ignoreInEval]
    meta = CategoryMap(categories).to_meta("cityscapes")
    assert meta.class_names == CITYSCAPES_CLASSES
    assert meta.thing_ids == DatasetMeta().thing_ids == (11, 12, 13, 14, 15, 16, 17, 18)
    assert meta.category_ids == tuple(range(19))
