"""PanopticDataset: targets of a hand-made case, COCO and Cityscapes layouts, bad files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.image_io import write_panoptic_png
from rt_panoptic_ros.image_io import write_rgb as write_image
from rt_panoptic_ros.training.data import PanopticDataset, cityscapes_panoptic, coco_panoptic

# Categories listed out of id order, with ids that are not contiguous: the dataset must map
# them by the JSON (road 7 -> 0, sky 23 -> 1, person 24 -> 2, car 26 -> 3), not by position.
CATEGORIES = [
    {"id": 26, "name": "car", "isthing": 1},
    {"id": 7, "name": "road", "isthing": 0},
    {"id": 24, "name": "person", "isthing": 1},
    {"id": 23, "name": "sky", "isthing": 0},
]


def hand_made_ids() -> np.ndarray:
    """6x8 panoptic ids: sky over road, a car, a person, a crowd of people, one VOID pixel."""
    ids = np.full((6, 8), 7, np.uint32)
    ids[:2] = 23
    ids[0, 0] = 0  # VOID
    ids[3:5, 1:4] = 26000  # car
    ids[2:5, 6] = 24001  # person
    ids[5, 5:8] = 24  # crowd of people (Cityscapes-style id < 1000)
    return ids


SEGMENTS = [
    {"id": 23, "category_id": 23, "iscrowd": 0},
    {"id": 7, "category_id": 7, "iscrowd": 0},
    {"id": 26000, "category_id": 26, "iscrowd": 0},
    {"id": 24001, "category_id": 24, "iscrowd": 0},
    {"id": 24, "category_id": 24, "iscrowd": 1},
]


def write_case(root, ids=None, segments=None, image_size=(6, 8)):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "panoptic").mkdir(exist_ok=True)
    image = np.random.default_rng(0).integers(0, 256, (*image_size, 3), dtype=np.uint8)
    write_image(root / "images" / "a.png", image)
    write_panoptic_png(root / "panoptic" / "a.png", hand_made_ids() if ids is None else ids)
    data = {
        "images": [{"id": "a", "file_name": "a.png", "height": image_size[0], "width": image_size[1]}],
        "annotations": [{"image_id": "a", "file_name": "a.png", "segments_info": segments or SEGMENTS}],
        "categories": CATEGORIES,
    }
    (root / "panoptic.json").write_text(json.dumps(data))
    return image


def open_case(root, **kwargs) -> PanopticDataset:
    return PanopticDataset(root / "panoptic.json", root / "panoptic", root / "images", **kwargs)


def test_hand_made_case_gives_the_expected_targets(tmp_path):
    image = write_case(tmp_path)
    dataset = open_case(tmp_path, name="toy")
    assert len(dataset) == 1
    assert dataset.meta.class_names == ("road", "sky", "person", "car")
    assert dataset.meta.thing_ids == (2, 3)
    assert dataset.meta.category_ids == (7, 23, 24, 26)
    item = dataset[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 6, 8)
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), image)

    expected = np.full((6, 8), 0)  # road
    expected[:2] = 1  # sky
    expected[0, 0] = 255  # VOID -> ignore
    expected[3:5, 1:4] = 3  # car
    expected[2:5, 6] = 2  # person
    expected[5, 5:8] = 2  # the crowd keeps its class in the semantic map
    assert item["semantic"].dtype == torch.int64
    np.testing.assert_array_equal(item["semantic"].numpy(), expected)

    # Things in segments_info order: car, person, crowd. Boxes are pixel-edge xyxy.
    assert item["boxes"].tolist() == [[1, 3, 4, 5], [6, 2, 7, 5], [5, 5, 8, 6]]
    assert item["classes"].tolist() == [3, 2, 2]
    assert item["thing_classes"].tolist() == [1, 0, 0]  # box-class channel: index into thing_ids
    assert item["iscrowd"].tolist() == [False, False, True]
    assert item["masks"].dtype == torch.bool and item["masks"].shape == (3, 6, 8)
    ids = hand_made_ids()
    for mask, segment_id in zip(item["masks"].numpy(), [26000, 24001, 24], strict=True):
        np.testing.assert_array_equal(mask, ids == segment_id)
    assert item["image_id"] == "a"


def test_coco_2017_layout(tmp_path):
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations" / "panoptic_val2017").mkdir(parents=True)
    ids = np.zeros((48, 64), np.uint32)
    ids[10:30, 5:25] = 3_456_789  # COCO panoptic ids are random 24-bit colours
    ids[30:, :] = 8_000_001
    cv2.imwrite(str(root / "val2017" / "000000000139.jpg"), np.full((48, 64, 3), 90, np.uint8))
    write_panoptic_png(root / "annotations" / "panoptic_val2017" / "000000000139.png", ids)
    data = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 48, "width": 64}],
        "annotations": [
            {
                "image_id": 139,
                "file_name": "000000000139.png",
                "segments_info": [
                    {"id": 3_456_789, "category_id": 1, "iscrowd": 0, "area": 400, "bbox": [5, 10, 20, 20]},
                    {
                        "id": 8_000_001,
                        "category_id": 184,
                        "iscrowd": 0,
                        "area": 1152,
                        "bbox": [0, 30, 64, 18],
                    },
                ],
            }
        ],
        "categories": [
            {"id": 1, "name": "person", "isthing": 1},
            {"id": 184, "name": "tree-merged", "isthing": 0},
        ],
    }
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    item = coco_panoptic(root, "val")[0]
    assert item["image_id"] == 139 and item["image"].shape == (3, 48, 64)
    assert item["boxes"].tolist() == [[5, 10, 25, 30]]
    assert item["classes"].tolist() == [0] and item["thing_classes"].tolist() == [0]
    assert set(np.unique(item["semantic"].numpy()).tolist()) == {0, 1, 255}


def test_cityscapes_as_cityscapesscripts_writes_it(tmp_path):
    """A tiny Cityscapes tree run through the real csCreatePanopticImgs --use-train-id."""
    from cityscapesscripts.helpers.labels import id2label
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    root = tmp_path / "cityscapes"
    name = "frankfurt_000000_000294"
    (root / "gtFine" / "val" / "frankfurt").mkdir(parents=True)
    (root / "leftImg8bit" / "val" / "frankfurt").mkdir(parents=True)
    instance_ids = np.full((32, 64), 7, np.uint16)  # road
    instance_ids[:10] = 23  # sky
    instance_ids[8:16, 0:20] = 11  # building
    instance_ids[14:24, 10:30] = 26000  # car 0
    instance_ids[14:24, 40:52] = 26001  # car 1
    instance_ids[12:20, 54:60] = 24  # a crowd of people (id < 1000)
    instance_ids[28:, :] = 1  # ego vehicle: ignored in evaluation -> VOID
    instance_ids[0, :5] = 0  # unlabeled -> VOID
    cv2.imwrite(str(root / "gtFine" / "val" / "frankfurt" / f"{name}_gtFine_instanceIds.png"), instance_ids)
    image = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    write_image(root / "leftImg8bit" / "val" / "frankfurt" / f"{name}_leftImg8bit.png", image)
    convert2panoptic(str(root / "gtFine"), str(root / "gtFine"), useTrainId=True, setNames=["val"])

    dataset = cityscapes_panoptic(root, "val")
    assert dataset.meta.thing_ids == (11, 12, 13, 14, 15, 16, 17, 18)
    assert dataset.meta.class_names[13] == "car"
    item = dataset[0]
    assert item["image_id"] == name
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), image)
    label = np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids)
    train_ids = np.vectorize(lambda i: id2label[int(i)].trainId)(label)
    np.testing.assert_array_equal(item["semantic"].numpy(), np.where(train_ids < 0, 255, train_ids))
    assert item["classes"].tolist() == [11, 13, 13]  # the crowd (id 24) sorts first in the JSON
    assert item["iscrowd"].tolist() == [True, False, False]
    assert item["boxes"].tolist() == [[54, 12, 60, 20], [10, 14, 30, 24], [40, 14, 52, 24]]


def test_missing_files_stop_the_dataset_at_construction(tmp_path):
    write_case(tmp_path)
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"images/a\.png: image of image_id 'a' not found"):
        open_case(tmp_path)
    write_case(tmp_path)
    (tmp_path / "panoptic" / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"panoptic/a\.png: panoptic PNG of image_id 'a' not found"):
        open_case(tmp_path)


def test_an_unlisted_png_id_is_named_with_file_and_json(tmp_path):
    write_case(tmp_path, segments=SEGMENTS[:-1])  # the crowd's id 24 is in the PNG but not listed
    dataset = open_case(tmp_path)
    with pytest.raises(
        DatasetError, match=r"panoptic/a\.png \(.*panoptic\.json\): segment id\(s\) 24 in the PNG"
    ):
        dataset[0]


def test_image_and_png_of_different_sizes_are_refused(tmp_path):
    write_case(tmp_path, image_size=(6, 9))
    with pytest.raises(DatasetError, match=r"panoptic/a\.png: 6x8 does not match its image .*a\.png \(6x9\)"):
        open_case(tmp_path)[0]


def test_annotation_without_image_entry_and_unknown_category(tmp_path):
    write_case(tmp_path)
    data = json.loads((tmp_path / "panoptic.json").read_text())
    data["images"] = []
    (tmp_path / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"annotations\[0\]: image_id 'a' has no entry in 'images'"):
        open_case(tmp_path)
    write_case(tmp_path, segments=[*SEGMENTS[:-1], {"id": 24, "category_id": 99, "iscrowd": 1}])
    with pytest.raises(DatasetError, match=r"annotations\[0\]\.segments_info: category_id 99 is not one of"):
        open_case(tmp_path)
