"""STQ / AQ / SQ (Weber et al., STEP, 2021) and identity counts: a case worked out by hand, the
rules it must get right, and ``rt-panoptic-eval --video`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import run_cli

from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.training.data.panoptic_format import Category, Segment
from rt_panoptic_ros.training.data.synthetic import synthetic_categories, write_dataset
from rt_panoptic_ros.training.data.synthetic_video import (
    plan_video,
    render_frame,
    video_rng,
    write_video_dataset,
)
from rt_panoptic_ros.training.evaluate import main
from rt_panoptic_ros.training.evaluation.video_quality import VideoQualityEvaluator

ROAD, PERSON, CAR = 7, 24, 26
CATEGORIES = [Category(ROAD, "road", False), Category(PERSON, "person", True), Category(CAR, "car", True)]
# Ground truth: tracks A (a car) and B (a person), road R, a car crowd region C, 0 = VOID.
A, B, R, C = 26001, 24001, 7, 26
GT_SEGMENTS = {
    A: Segment(A, CAR),
    B: Segment(B, PERSON),
    R: Segment(R, ROAD),
    C: Segment(C, CAR, iscrowd=True),
}
# Prediction: p is a car, q a person, r road.
p, q, r = 1, 2, 3
PRED_SEGMENTS = {p: Segment(p, CAR), q: Segment(q, PERSON), r: Segment(r, ROAD)}


def frame(gt_row: list[int], pred_row: list[int]):
    """One 1 x 6 frame: both id maps and the segments each lists."""
    gt, pred = np.array([gt_row], np.uint32), np.array([pred_row], np.uint32)
    listed = lambda ids, table: [table[i] for i in sorted(set(ids) - {0})]  # noqa: E731
    return gt, listed(gt_row, GT_SEGMENTS), pred, listed(pred_row, PRED_SEGMENTS)


def test_stq_aq_sq_and_identity_counts_by_hand():
    evaluator = VideoQualityEvaluator(CATEGORIES)
    # Video "a", columns 0..5:
    evaluator.process("a", 0, *frame([A, A, B, B, R, 0], [p, p, p, q, r, q]))
    evaluator.process("a", 1, *frame([A, A, B, B, C, R], [q, q, p, p, p, r]))
    # Video "b" reuses the ids A and p: other tracks, as ids are per video.
    evaluator.process("b", 0, *frame([A, A, A, R, R, R], [p, p, p, r, r, r]))
    stq = evaluator.evaluate()["STQ"]

    # Track sizes. |A_a| = 2 + 2 = 4, |B_a| = 2 + 2 = 4. Predicted tracks count every predicted
    # thing pixel except those on the crowd region (frame 1, column 4), VOID included (frame 0,
    # column 5): |p_a| = 3 + 2 = 5, |q_a| = 2 + 2 = 4. In video b: |A_b| = |p_b| = 3.
    # TPA: A∩p = 2, A∩q = 2, B∩p = 1 + 2 = 3, B∩q = 1; A_b∩p_b = 3.
    # IoU_id = TPA / (|p| + |g| - TPA): A,p 2/7; A,q 2/6; B,p 3/6; B,q 1/7; A_b,p_b 1.
    # AQ(A_a) = (2·2/7 + 2·2/6) / 4 = 13/42;  AQ(B_a) = (3·3/6 + 1·1/7) / 4 = 23/56;  AQ(A_b) = 1.
    aq_a = 13 / 42 + 23 / 56  # = 121/168
    assert stq["per_video"]["a"]["aq"] == pytest.approx(aq_a / 2, abs=1e-12)
    assert stq["per_video"]["b"]["aq"] == pytest.approx(1.0, abs=1e-12)
    assert stq["tracks"] == 3
    assert stq["aq"] == pytest.approx((aq_a + 1) / 3, abs=1e-12)  # 289/504: over all tracks, not videos

    # SQ: class IoU over all three frames, ground-truth VOID ignored (frame 0, column 5).
    # road: TP 5, FP 0, FN 0 -> 1. car: 8 ground-truth pixels (the crowd's too), TP 6 (A_a in
    # frame 0, the crowd pixel, A_b), FN 2 (A_a in frame 1 predicted person), FP 3 (B_a pixels
    # predicted car) -> 6/11. person: 4 pixels, TP 1, FN 3, FP 2 -> 1/6.
    sq = (1 + 6 / 11 + 1 / 6) / 3  # = 113/198
    assert stq["sq"] == pytest.approx(sq, abs=1e-12)
    assert stq["stq"] == pytest.approx(math.sqrt((aq_a + 1) / 3 * sq), abs=1e-12)
    # Video a alone: car TP 3, FN 2, FP 3 -> 3/8; person 1/6; road 1.
    assert stq["per_video"]["a"]["sq"] == pytest.approx((1 + 3 / 8 + 1 / 6) / 3, abs=1e-12)

    # Per-frame matches (IoU > 0.5). Frame 0: A-p (2/3); B none (with q 1/3, with p 1/4).
    # Frame 1: A-q (1), B-p (2/2: the crowd pixel is not p's). A changed id: one switch; the
    # one pair of frames with A matched in both did not keep its id.
    assert stq["id_switches"] == 1
    assert (stq["consistent_pairs"], stq["matched_pairs"], stq["id_consistency"]) == (0, 1, 0.0)
    assert stq["per_video"]["b"]["id_consistency"] is None  # one frame: no pair
    assert (stq["videos"], stq["frames"]) == (2, 3)


def test_association_ignores_the_predicted_class():
    """One predicted id on one object, labelled car then person: one track, AQ 1 (SQ pays)."""
    evaluator = VideoQualityEvaluator(CATEGORIES)
    gt, gt_segments, pred, _ = frame([A, A, A, R, R, R], [p, p, p, r, r, r])
    evaluator.process("v", 0, gt, gt_segments, pred, [Segment(p, CAR), Segment(r, ROAD)])
    evaluator.process("v", 1, gt, gt_segments, pred, [Segment(p, PERSON), Segment(r, ROAD)])
    stq = evaluator.evaluate()["STQ"]
    assert stq["aq"] == 1.0 and stq["sq"] < 1.0 and stq["id_switches"] == 0


def test_two_ids_on_one_object_split_its_association():
    """p on the car in frame 0, q in frames 1 and 2: |A| = 9, TPA 3 and 6, IoU_id 3/9 and 6/9."""
    evaluator = VideoQualityEvaluator(CATEGORIES)
    for t, pred_id in enumerate((p, q, q)):
        gt, gt_segments, pred, _ = frame([A, A, A, R, R, R], [pred_id] * 3 + [r] * 3)
        evaluator.process("v", t, gt, gt_segments, pred, [Segment(pred_id, CAR), Segment(r, ROAD)])
    stq = evaluator.evaluate()["STQ"]
    assert stq["aq"] == pytest.approx((3 * 3 / 9 + 6 * 6 / 9) / 9, abs=1e-12)  # 5/9
    assert stq["id_switches"] == 1 and stq["id_consistency"] == 0.5  # frames (0, 1) no, (1, 2) yes


def render(seed: int, frames: int = 6, height: int = 64, width: int = 128):
    plan = plan_video(video_rng(seed, 0), frames, height, width)
    return [render_frame(plan, t).scene for t in range(frames)]


def segments_of(scene) -> list[Segment]:
    return [Segment(s["id"], s["category_id"], bool(s["iscrowd"]), s["area"]) for s in scene.segments]


def score(scenes, predict) -> dict:
    """STQ of one video whose prediction of frame ``t`` is ``predict(t, ids, segments)``."""
    evaluator = VideoQualityEvaluator(synthetic_categories())
    for t, scene in enumerate(scenes):
        pred_ids, pred_segments = predict(t, scene.ids, segments_of(scene))
        evaluator.process("v", t, scene.ids, segments_of(scene), pred_ids, pred_segments)
    return evaluator.evaluate()["STQ"]


def relabel(ids: np.ndarray, segments: list[Segment], mapping: dict[int, int]):
    """Both the id map and ``segments_info`` with ids renamed by ``mapping``."""
    table = {s.id: mapping.get(s.id, s.id) for s in segments}
    renamed = np.vectorize(lambda i: table.get(int(i), 0), otypes=[np.uint32])(ids)
    return renamed, [Segment(table[s.id], s.category_id, s.iscrowd) for s in segments]


def test_perfect_prediction_scores_one():
    stq = score(render(seed=4), lambda t, ids, segments: (ids, segments))
    assert (stq["stq"], stq["aq"], stq["sq"], stq["id_switches"], stq["id_consistency"]) == (1, 1, 1, 0, 1)
    assert stq["tracks"] >= 4


def test_swapped_ids_lower_aq_and_count_two_switches():
    scenes = render(seed=4)
    # The two largest non-crowd things seen in frames 2 and 3 trade ids from frame 3 on.
    in_both = [
        s for s in scenes[2].segments
        if s["id"] >= 1000 and s["id"] in {x["id"] for x in scenes[3].segments}
    ]  # fmt: skip
    first, second = (s["id"] for s in sorted(in_both, key=lambda s: -s["area"])[:2])
    swap = {first: second, second: first}
    stq = score(scenes, lambda t, ids, segments: relabel(ids, segments, swap if t >= 3 else {}))
    assert stq["sq"] == 1.0 and stq["aq"] < 0.9
    assert stq["id_switches"] == 2
    assert stq["matched_pairs"] - stq["consistent_pairs"] == 2


def test_per_frame_ids_without_tracking_score_low_aq():
    """What rt-panoptic-infer writes without --track: the things numbered afresh in each frame
    (here 100 + k, in an order of their own, apart from the stuff and crowd ids)."""

    def per_frame(t, ids, segments):
        things = [s.id for s in segments if s.id >= 1000]
        order = np.random.default_rng(t).permutation(len(things))
        return relabel(ids, segments, {things[k]: 100 + int(order[k]) for k in range(len(things))})

    stq = score(render(seed=4), per_frame)
    assert stq["sq"] == 1.0 and stq["aq"] < 0.6 and stq["id_switches"] > 2


def test_frames_must_come_in_order():
    evaluator = VideoQualityEvaluator(CATEGORIES)
    evaluator.process("v", 3, *frame([A, A, A, R, R, R], [p, p, p, r, r, r]))
    evaluator.process("w", 0, *frame([A, A, A, R, R, R], [p, p, p, r, r, r]))  # another video
    with pytest.raises(DatasetError, match="video 'v': frame_index 3 after frame_index 3"):
        evaluator.process("v", 3, *frame([A, A, A, R, R, R], [p, p, p, r, r, r]))


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    out = tmp_path_factory.mktemp("video")
    write_video_dataset(out, sequences=2, frames=4, seed=1, height=32, width=64, progress=False)
    return out


def test_cli_ground_truth_as_prediction_scores_one(tiny_video, tmp_path):
    gt = ["--gt-json", str(tiny_video / "panoptic.json"), "--gt-dir", str(tiny_video / "panoptic")]
    pred = ["--pred-json", str(tiny_video / "panoptic.json"), "--pred-dir", str(tiny_video / "panoptic")]
    output = tmp_path / "results.json"
    result = run_cli("rt-panoptic-eval", "--video", *gt, *pred, "--workers", "1", "--output", str(output))
    assert result.returncode == 0, result.stderr
    stq = json.loads(output.read_text())["STQ"]
    assert (stq["stq"], stq["aq"], stq["sq"], stq["id_switches"]) == (1.0, 1.0, 1.0, 0)
    assert (stq["videos"], stq["frames"], list(stq["per_video"])) == (2, 8, ["video_0000", "video_0001"])
    assert "video_0001 |  100.0  100.0  100.0" in result.stdout
    assert json.loads(output.read_text())["All"]["pq"] == 1.0  # PQ over the frames too


def test_cli_errors_are_one_line(tiny_video, tmp_path, capsys):
    still = tmp_path / "still"
    write_dataset(still, num=2, height=32, width=64, progress=False)
    args = ["--gt-json", str(still / "panoptic.json"), "--gt-dir", str(still / "panoptic")]
    args += ["--pred-json", str(still / "panoptic.json"), "--pred-dir", str(still / "panoptic")]
    assert main(["--video", *args, "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "images[] entry of image_id 'synth_000000': missing field 'video_id'" in err
    # Two images claiming one frame of a video.
    data = json.loads((tiny_video / "panoptic.json").read_text())
    data["images"][1]["frame_index"] = 0
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    args = ["--gt-json", str(broken), "--gt-dir", str(tiny_video / "panoptic")]
    args += ["--pred-json", str(broken), "--pred-dir", str(tiny_video / "panoptic")]
    assert main(["--video", *args, "--workers", "1"]) == 1
    assert "are both frame_index 0 of video_id 'video_0000'" in capsys.readouterr().err
