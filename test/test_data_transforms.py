"""The paper's augmentation moves image, segments and boxes together (a box stays on its object)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rt_panoptic_ros.training.data import PanopticDataset, write_dataset
from rt_panoptic_ros.training.data.panoptic_format import segment_boxes
from rt_panoptic_ros.training.data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    ResizeShortestEdge,
    Sample,
    cityscapes_train_transforms,
    coco_train_transforms,
)


def make_sample(height: int = 60, width: int = 100) -> Sample:
    """Three rectangles and a disc on VOID; the image paints each segment its own colour."""
    segments = np.full((height, width), -1, np.int32)
    segments[5:25, 10:40] = 0
    segments[30:55, 50:95] = 1
    segments[40:58, 2:20] = 2
    yy, xx = np.mgrid[:height, :width]
    segments[(yy - 20) ** 2 + (xx - 70) ** 2 < 12**2] = 3
    colours = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0], [0, 0, 0]], np.uint8)
    boxes, _ = segment_boxes(segments, 4)
    return Sample(image=colours[segments], segments=segments, boxes=boxes)


def assert_boxes_on_objects(sample: Sample, tolerance: float) -> None:
    """Each transformed box holds its object's pixels and, for the rectangles (segments 0-2),
    is their tight box, up to ``tolerance`` pixels. (A clipped box of the disc may be wider than
    what is left of the disc, as for any geometric box transform.)"""
    tight, areas = segment_boxes(sample.segments, len(sample.boxes))
    for k in np.flatnonzero(areas):
        box = sample.boxes[k]
        assert (box[:2] <= tight[k, :2] + tolerance).all() and (box[2:] >= tight[k, 2:] - tolerance).all(), k
        if k < 3:
            np.testing.assert_allclose(box, tight[k], atol=tolerance, err_msg=f"segment {k}")


def interior(segments: np.ndarray, k: int, margin: int) -> np.ndarray:
    """Pixels of segment ``k`` at least ``margin`` pixels from its border (bilinear blends
    colours up to one source pixel, i.e. ``scale`` target pixels, around a border)."""
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    return cv2.erode((segments == k).astype(np.uint8), kernel).astype(bool)


def test_flip_mirrors_image_segments_and_boxes_exactly():
    sample = make_sample()
    out = RandomHorizontalFlip(1.0)(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out.image, sample.image[:, ::-1])
    np.testing.assert_array_equal(out.segments, sample.segments[:, ::-1])
    assert out.boxes[0].tolist() == [60, 5, 90, 25]  # x1 = W - x2, x2 = W - x1
    assert_boxes_on_objects(out, 0)
    assert RandomHorizontalFlip(0.0)(sample, np.random.default_rng(0)) is sample


@pytest.mark.parametrize("scale", [0.7, 1.0, 1.3, 0.37, 2.5])
def test_scale_keeps_boxes_on_their_objects(scale):
    sample = make_sample()
    out = RandomScale(scale, scale)(sample, np.random.default_rng(0))
    assert out.size == (round(60 * scale), round(100 * scale))
    assert_boxes_on_objects(out, tolerance=max(1.0, scale / 2 + 0.5))
    # The image moved with the segments: interior pixels keep their segment's colour.
    inside = interior(out.segments, 1, margin=int(np.ceil(scale)))
    assert inside.sum() > 50
    assert (np.abs(out.image[inside].astype(int) - [0, 200, 0]) <= 1).all()


@pytest.mark.parametrize("scale", [1 / 3, 0.5, 1.5, 2.0])
def test_resized_segments_stay_aligned_with_the_resized_image(scale):
    """Stripes 4 px wide, black and white by segment: wherever the bilinear image is a pure
    colour, the nearest-neighbour segment must be of that colour. (OpenCV's plain
    INTER_NEAREST, half a pixel off, fails this at 1/3.)"""
    segments = np.tile(np.arange(48, dtype=np.int32) // 4, (6, 1))  # [6, 48], 12 stripes
    image = np.repeat((255 * (segments % 2)).astype(np.uint8)[..., None], 3, axis=2)
    boxes, _ = segment_boxes(segments, 12)
    out = RandomScale(scale, scale)(Sample(image, segments, boxes), np.random.default_rng(0))
    pure = (out.image[..., 0] == 0) | (out.image[..., 0] == 255)
    assert pure.sum() > out.segments.size // 3
    np.testing.assert_array_equal(out.image[..., 0][pure] // 255, out.segments[pure] % 2)


def test_crop_shifts_and_clips_boxes():
    sample = make_sample()
    out = RandomCrop(40, 70)(sample, np.random.default_rng(3))
    assert out.size == (40, 70)
    assert (out.boxes[:, 0::2] >= 0).all() and (out.boxes[:, 0::2] <= 70).all()
    assert (out.boxes[:, 1::2] >= 0).all() and (out.boxes[:, 1::2] <= 40).all()
    assert_boxes_on_objects(out, 0)
    # A crop larger than the image keeps the whole image.
    whole = RandomCrop(900, 1800)(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(whole.image, sample.image)


def test_shortest_edge_with_the_longest_capped():
    sample = make_sample(60, 100)
    out = ResizeShortestEdge((30,), max_size=1000)(sample, np.random.default_rng(0))
    assert out.size == (30, 50)
    capped = ResizeShortestEdge((90,), max_size=120)(sample, np.random.default_rng(0))
    assert capped.size == (72, 120)  # 90 / 60 would make the long side 150 > 120
    sizes = {
        ResizeShortestEdge((640, 720, 800), 1333)(sample, np.random.default_rng(s)).size[0] for s in range(30)
    }
    assert sizes == {640, 720, 800}


def test_paper_pipelines_keep_boxes_on_objects():
    rng = np.random.default_rng(0)
    for seed in range(8):
        sample = make_sample(90, 180)
        out = cityscapes_train_transforms(crop=(60, 120))(sample, np.random.default_rng(seed))
        h, w = out.size
        assert 0.7 * 60 - 1 <= h <= 1.3 * 60 + 1 and 0.7 * 120 - 1 <= w <= 1.3 * 120 + 1
        assert_boxes_on_objects(out, tolerance=1.2)
        out = coco_train_transforms(short_edges=(45, 60), max_size=200)(sample, rng)
        assert min(out.size) in (45, 60)
        assert_boxes_on_objects(out, tolerance=1.2)
    assert "RandomCrop(900, 1800)" in repr(cityscapes_train_transforms())


def test_dataset_augmentation_is_seeded_per_epoch(tmp_path):
    write_dataset(tmp_path, num=1, seed=1, height=64, width=128, progress=False)
    transforms = Compose([RandomScale(0.7, 1.3), RandomHorizontalFlip()])
    dataset = PanopticDataset(tmp_path / "panoptic.json", tmp_path / "panoptic", tmp_path / "images",
                              transforms=transforms, seed=5)  # fmt: skip
    first, again = dataset[0], dataset[0]
    assert first["image"].shape == again["image"].shape
    assert (first["image"] == again["image"]).all() and (first["boxes"] == again["boxes"]).all()
    shapes = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        item = dataset[0]
        shapes.add(tuple(item["image"].shape))
        # Targets follow the augmented image: every mask lies inside its box.
        for mask, box in zip(item["masks"].numpy(), item["boxes"].numpy(), strict=True):
            ys, xs = np.nonzero(mask)
            assert box[0] - 1 <= xs.min() and xs.max() + 1 <= box[2] + 1
            assert box[1] - 1 <= ys.min() and ys.max() + 1 <= box[3] + 1
    assert len(shapes) > 1


def test_bad_transform_arguments_are_refused():
    with pytest.raises(ValueError, match="min_scale"):
        RandomScale(1.3, 0.7)
    with pytest.raises(ValueError, match="prob"):
        RandomHorizontalFlip(1.5)
