"""PanopticTracker: stable instance ids across frames, on real tensors."""

from __future__ import annotations

import pytest
import torch

from rt_panoptic_ros.panoptic.result import InstanceSegment, PanopticResult
from rt_panoptic_ros.tracking import MAX_TRACK_ID, PanopticTracker

H, W = 96, 160
CAR, PERSON = 13, 11


def frame(objects, device="cpu"):
    """A result with one rectangle per ``(category_id, (x1, y1, x2, y2))``; later ones on top."""
    instance = torch.zeros(H, W, dtype=torch.int16)
    for k, (_, (x1, y1, x2, y2)) in enumerate(objects, start=1):
        instance[y1:y2, x1:x2] = k
    segments = []
    for k, (category, _) in enumerate(objects, start=1):
        ys, xs = torch.nonzero(instance == k, as_tuple=True)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        segments.append(InstanceSegment(k, category, 0.9, box, len(ys)))
    semantic = torch.zeros(H, W, dtype=torch.uint8)
    return PanopticResult(semantic, instance, segments).to(device)


def ids(result):
    return [s.id for s in result.segments]


def assert_contract(source, tracked):
    """Pixel t <-> segment id t, the same pixels as the input, ids in 1..65535 (int16 while they
    fit, else int32)."""
    fits = all(s.id <= 32767 for s in tracked.segments)
    assert tracked.instance.dtype == (torch.int16 if fits else torch.int32)
    assert tracked.instance.device == source.instance.device
    assert len(set(ids(tracked))) == len(tracked.segments)
    for before, after in zip(source.segments, tracked.segments, strict=True):
        assert 1 <= after.id <= MAX_TRACK_ID
        assert (before.category_id, before.bbox, before.area) == (after.category_id, after.bbox, after.area)
        assert torch.equal(source.instance == before.id, tracked.instance == after.id)
    assert torch.equal(source.instance == 0, tracked.instance == 0)


def box(x, y, w=20, h=20):
    return (x, y, x + w, y + h)


def test_moving_object_keeps_its_id():
    tracker = PanopticTracker()
    first = ids(tracker.update(frame([(CAR, box(10, 10)), (PERSON, box(100, 50))])))
    for step in range(1, 6):
        result = frame([(PERSON, box(100 - 2 * step, 50)), (CAR, box(10 + 3 * step, 10 + step))])
        tracked = tracker.update(result)
        assert_contract(result, tracked)
        assert ids(tracked) == first[::-1]  # input order kept: person first now


def test_crossing_objects_of_different_classes_keep_their_ids():
    # the person walks in front of the car: a third of the car is hidden while they pass
    tracker = PanopticTracker()
    start = ids(tracker.update(frame([(CAR, box(10, 20, 30, 30)), (PERSON, box(120, 40, 30, 30))])))
    for step in range(1, 12):
        a, b = 10 + 10 * step, 120 - 10 * step
        tracked = tracker.update(frame([(CAR, box(a, 20, 30, 30)), (PERSON, box(b, 40, 30, 30))]))
        assert ids(tracked) == start


def test_crossing_objects_of_one_class_keep_their_ids():
    # Two cars pass each other with partial vertical overlap; the one in front hides part of
    # the other, so masks differ from boxes.
    tracker = PanopticTracker()
    start = ids(tracker.update(frame([(CAR, box(10, 20, 30, 30)), (CAR, box(120, 40, 30, 30))])))
    for step in range(1, 12):
        a, b = 10 + 10 * step, 120 - 10 * step
        tracked = tracker.update(frame([(CAR, box(a, 20, 30, 30)), (CAR, box(b, 40, 30, 30))]))
        assert ids(tracked) == start


def test_object_missing_for_two_frames_gets_its_id_back_within_max_age():
    tracker = PanopticTracker(max_age=2)
    (car,) = ids(tracker.update(frame([(CAR, box(10, 30))])))
    assert ids(tracker.update(frame([(CAR, box(14, 30))]))) == [car]
    tracker.update(frame([]))
    tracker.update(frame([]))
    # constant velocity: 4 px per frame, so it is expected near x = 26
    assert ids(tracker.update(frame([(CAR, box(26, 30))]))) == [car]


def test_object_missing_longer_than_max_age_gets_a_new_id():
    tracker = PanopticTracker(max_age=1)
    (car,) = ids(tracker.update(frame([(CAR, box(10, 30))])))
    tracker.update(frame([]))
    tracker.update(frame([]))
    (again,) = ids(tracker.update(frame([(CAR, box(10, 30))])))
    assert again != car
    assert car not in tracker.tracks


def test_new_object_gets_a_new_unused_id():
    tracker = PanopticTracker()
    old = ids(tracker.update(frame([(CAR, box(10, 10)), (PERSON, box(60, 10))])))
    tracked = tracker.update(frame([(CAR, box(11, 10)), (CAR, box(120, 60)), (PERSON, box(61, 10))]))
    assert ids(tracked)[0] == old[0] and ids(tracked)[2] == old[1]
    assert ids(tracked)[1] not in old


def test_class_change_is_not_a_match():
    tracker = PanopticTracker()
    (car,) = ids(tracker.update(frame([(CAR, box(10, 10))])))
    (person,) = ids(tracker.update(frame([(PERSON, box(10, 10))])))
    assert person != car


def test_ids_are_never_reused_while_their_track_lives():
    tracker = PanopticTracker(max_age=1000)
    seen = set()
    for step in range(40):  # a new object far from the others every frame, all kept alive
        x, y = (step * 23) % (W - 10), (step * 37) % (H - 10)
        (new,) = ids(tracker.update(frame([(CAR, box(x, y, 4, 4))])))
        assert new not in seen
        seen.add(new)
    assert seen <= set(tracker.tracks)


def test_ids_wrap_around_65535_and_skip_live_ids():
    tracker = PanopticTracker()
    first = ids(tracker.update(frame([(CAR, box(0, 0)), (CAR, box(40, 0))])))
    assert first == [1, 2]
    tracker._next_id = MAX_TRACK_ID - 1  # as if 65533 ids had been handed out since
    objects = [(CAR, box(0, 0)), (CAR, box(40, 0))] + [(PERSON, box(10 + 25 * i, 60, 5, 5)) for i in range(4)]
    result = frame(objects)
    tracked = tracker.update(result)
    assert_contract(result, tracked)
    assert ids(tracked) == [1, 2, MAX_TRACK_ID - 1, MAX_TRACK_ID, 3, 4]
    assert int(tracked.instance.max()) == MAX_TRACK_ID


def test_contract_holds_with_overlapping_masks_and_unsorted_ids():
    tracker = PanopticTracker()
    for step in range(4):
        objects = [
            (CAR, box(20 + step, 20, 40, 40)),
            (CAR, box(40 + step, 30, 40, 40)),
            (PERSON, box(5, 5, 8, 30)),
        ]
        result = frame(objects)
        assert_contract(result, tracker.update(result))


def test_empty_frames():
    tracker = PanopticTracker()
    empty = frame([])
    tracked = tracker.update(empty)
    assert tracked.segments == [] and not tracked.instance.any()
    assert tracked.instance.dtype == torch.int16
    (car,) = ids(tracker.update(frame([(CAR, box(10, 10))])))
    assert tracker.update(frame([])).segments == []
    assert ids(tracker.update(frame([(CAR, box(11, 10))]))) == [car]


def test_small_objects_match_by_box_when_too_small_to_sample():
    tracker = PanopticTracker(iou_stride=4)
    (dot,) = ids(tracker.update(frame([(PERSON, box(1, 1, 2, 2))])))
    assert ids(tracker.update(frame([(PERSON, box(1, 1, 2, 2))]))) == [dot]


def test_bad_arguments_are_rejected():
    for kwargs in ({"max_age": -1}, {"iou_threshold": 0.0}, {"iou_stride": 0}):
        with pytest.raises(ValueError):
            PanopticTracker(**kwargs)


def test_reset_starts_over():
    tracker = PanopticTracker()
    tracker.update(frame([(CAR, box(10, 10))]))
    tracker.reset()
    assert ids(tracker.update(frame([(PERSON, box(60, 10))]))) == [1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    cpu, cuda = PanopticTracker(), PanopticTracker()
    for step in range(5):
        objects = [
            (CAR, box(10 + 3 * step, 10)),
            (PERSON, box(100 - 2 * step, 50)),
            (CAR, box(60, 40 + step)),
        ]
        on_cpu, on_cuda = cpu.update(frame(objects)), cuda.update(frame(objects, "cuda"))
        assert on_cuda.instance.device.type == "cuda"
        assert ids(on_cpu) == ids(on_cuda)
        assert torch.equal(on_cpu.instance, on_cuda.instance.cpu())
