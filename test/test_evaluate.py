"""The PQ / mIoU evaluator: parity with cityscapesscripts (a port of panopticapi), the rules
it must get right on purpose-built cases, mIoU by hand, the CLI and every bad-input case."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from rt_panoptic_ros.errors import DatasetError
from rt_panoptic_ros.image_io import read_panoptic_png, write_panoptic_png
from rt_panoptic_ros.training.data.panoptic_format import Category, Segment
from rt_panoptic_ros.training.data.perturb import write_prediction_pairs
from rt_panoptic_ros.training.evaluate import main
from rt_panoptic_ros.training.evaluation import PanopticEvaluator
from rt_panoptic_ros.training.evaluation.files import evaluate_files

TOLERANCE = 1e-9


def cityscapes_evaluate(gt_json: Path, gt_dir: Path, pred_json: Path, pred_dir: Path, tmp: Path) -> dict:
    """cityscapesscripts' panoptic evaluator (its own process pool), its printing silenced."""
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    with contextlib.redirect_stdout(io.StringIO()):
        return evaluatePanoptic(
            str(gt_json), str(gt_dir), str(pred_json), str(pred_dir), str(tmp / "cs.json")
        )


def assert_same_pq(ours: dict, reference: dict) -> None:
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == reference[group]["n"], group
        for key in ("pq", "sq", "rq"):
            assert abs(ours[group][key] - reference[group][key]) < TOLERANCE, (group, key)
    assert set(ours["per_class"]) == set(reference["per_class"])
    for cid, scores in reference["per_class"].items():
        for key in ("pq", "sq", "rq"):
            assert abs(ours["per_class"][cid][key] - scores[key]) < TOLERANCE, (cid, key)


# --- generated pairs: synthetic ground truth, simulated predictions -------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    return write_prediction_pairs(root, num=10, height=96, width=192, gt_seed=11, pred_seed=5)


def test_generated_pairs_exercise_void_crowd_and_near_misses(generated):
    """The parity test below is only worth something if its data hits the rules."""
    gt_json, gt_dir, pred_json, pred_dir = generated
    gt = {a["image_id"]: a for a in json.loads(gt_json.read_text())["annotations"]}
    ignored, near_hits, near_misses = 0, 0, 0
    for ann in json.loads(pred_json.read_text())["annotations"]:
        g, p = read_panoptic_png(gt_dir / ann["file_name"]), read_panoptic_png(pred_dir / ann["file_name"])
        gt_segments = gt[ann["image_id"]]["segments_info"]
        crowd = {s["category_id"]: s["id"] for s in gt_segments if s["iscrowd"]}
        for ps in ann["segments_info"]:
            mask = p == ps["id"]
            on_void = (mask & (g == 0)).sum() + (mask & (g == crowd.get(ps["category_id"], -1))).sum()
            ignored += on_void * 2 > mask.sum()
            for gs in gt_segments:
                if gs["category_id"] == ps["category_id"] and not gs["iscrowd"]:
                    inter = (mask & (g == gs["id"])).sum()
                    iou = inter / (mask.sum() + gs["area"] - inter - (mask & (g == 0)).sum())
                    near_hits += 0.5 < iou < 0.65
                    near_misses += 0.35 < iou <= 0.5
    assert ignored >= 3 and near_hits >= 3 and near_misses >= 3


def test_pq_equals_cityscapesscripts_on_generated_pairs(generated, tmp_path):
    reference = cityscapes_evaluate(*generated, tmp_path)
    ours, _ = evaluate_files(*generated, workers=1, progress=False)
    assert_same_pq(ours, reference)
    assert 0.1 < ours["All"]["pq"] < 0.9  # neither trivial nor perfect
    assert ours["images"] == 10


def test_worker_processes_give_the_same_numbers(generated):
    one, _ = evaluate_files(*generated, workers=1, progress=False)
    two, _ = evaluate_files(*generated, workers=2, progress=False)
    assert one == two


# --- a purpose-built pair: each rule of pq_compute on its own ------------------------------

CATEGORIES = [
    {"id": 1, "name": "road", "isthing": 0},
    {"id": 2, "name": "sky", "isthing": 0},
    {"id": 24, "name": "person", "isthing": 1},
    {"id": 26, "name": "car", "isthing": 1},
]


def image_a() -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """16x24 ground truth and prediction (ids) and the prediction's categories."""
    gt = np.zeros((16, 24), np.uint32)
    gt[0:4] = 2  # sky
    gt[4:16] = 1  # road
    gt[12:16, 0:8] = 0  # VOID
    gt[4:8, 0:6] = 24  # crowd of people A
    gt[4:8, 18:24] = 124  # crowd of people B, listed after A: panopticapi uses this one
    gt[8:11, 8:12] = 26000  # car, 12 px
    gt[8:10, 14:19] = 24001  # person, 10 px

    pred = np.zeros((16, 24), np.uint32)
    pred[0:4] = 5  # sky, exact
    pred[4:12] = 6  # road
    pred[12:16, 8:] = 6
    pred[4:8, 0:4] = 7  # person on crowd A: a false positive (A is not the crowd panopticapi looks at)
    pred[4:8, 20:24] = 8  # person on crowd B: ignored
    pred[8:10, 8:12] = 9  # car: 8 px on the car, 4 px on road: IoU 8/16 = 0.5 exactly: no match
    pred[11, 8:12] = 9
    pred[8:10, 14:18] = 10  # person: 8 px on it, 6 on VOID, 2 on road: IoU 8/(16+10-8-6) = 2/3
    pred[12, 0:6] = 10
    pred[10, 14:16] = 10
    pred[13:16, 0:4] = 11  # car, 12 of 16 px on VOID: ignored
    pred[11, 0:4] = 11
    pred[14:16, 4:12] = 12  # road, exactly half on VOID: not ignored (> 0.5 is the rule)
    categories = {5: 2, 6: 1, 7: 24, 8: 24, 9: 26, 10: 24, 11: 26, 12: 1}
    return gt, pred, categories


def image_b() -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    gt = np.full((16, 24), 2, np.uint32)
    gt[8:] = 1
    gt[10:14, 5:13] = 26001
    pred = np.where(gt == 26001, 777, np.where(gt == 2, 555, 666)).astype(np.uint32)
    return gt, pred, {555: 2, 666: 1, 777: 26}


def gt_segments(ids: np.ndarray) -> list[dict]:
    segments = []
    for i in [int(v) for v in np.unique(ids) if v]:
        category = i // 1000 if i >= 1000 else i % 100
        segments.append(
            {"id": i, "category_id": category, "iscrowd": int(i in (24, 124)), "area": int((ids == i).sum())}
        )
    return segments


def write_pair(root: Path) -> list[str]:
    """Ground truth and prediction of images 'a' and 'b'; returns the CLI arguments."""
    for folder in ("gt", "pred"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    gt_annotations, pred_annotations = [], []
    for name, (gt, pred, categories) in (("a", image_a()), ("b", image_b())):
        write_panoptic_png(root / "gt" / f"{name}.png", gt)
        write_panoptic_png(root / "pred" / f"{name}.png", pred)
        gt_annotations.append(
            {"image_id": name, "file_name": f"{name}.png", "segments_info": gt_segments(gt)}
        )
        pred_segments = [{"id": i, "category_id": c} for i, c in categories.items()]
        pred_annotations.append(
            {"image_id": name, "file_name": f"{name}.png", "segments_info": pred_segments}
        )
    (root / "gt.json").write_text(json.dumps({"annotations": gt_annotations, "categories": CATEGORIES}))
    (root / "pred.json").write_text(json.dumps({"annotations": pred_annotations}))
    return ["--gt-json", str(root / "gt.json"), "--gt-dir", str(root / "gt"),
            "--pred-json", str(root / "pred.json"), "--pred-dir", str(root / "pred")]  # fmt: skip


def test_each_rule_as_panopticapi_applies_it(tmp_path):
    write_pair(tmp_path)
    paths = (tmp_path / "gt.json", tmp_path / "gt", tmp_path / "pred.json", tmp_path / "pred")
    reference = cityscapes_evaluate(*paths, tmp_path)
    ours, _ = evaluate_files(*paths, workers=1, progress=False)
    assert_same_pq(ours, reference)
    # By hand. person: one TP at IoU 2/3 (VOID left out of the union), one FP (on crowd A),
    # the one on crowd B ignored. car: 'a' has IoU exactly 0.5 (a FN and a FP), the mostly-VOID
    # prediction ignored; 'b' one TP at IoU 1.
    assert ours["per_class"][24] == pytest.approx(
        {"pq": (2 / 3) / 1.5, "sq": 2 / 3, "rq": 1 / 1.5}, abs=1e-12
    )
    assert ours["per_class"][26] == pytest.approx({"pq": 1 / 2, "sq": 1.0, "rq": 1 / 2}, abs=1e-12)


def test_miou_by_hand():
    """2x4 pixels, classes A (stuff) and B (thing):

    ground truth  A A B B     prediction  A B B .     (. = VOID)
                  A . B B                 A A B B

    A: TP 2, FN 1 (predicted B); the A predicted on ground-truth VOID does not count: 2/3.
    B: TP 3, FN 1 (predicted VOID), FP 1: 3/5. mIoU = (2/3 + 3/5) / 2 = 19/30.
    """
    evaluator = PanopticEvaluator([Category(1, "A", False), Category(2, "B", True)])
    gt = np.array([[1, 1, 2, 2], [1, 0, 2, 2]], np.uint32)
    pred = np.array([[10, 20, 20, 0], [10, 10, 20, 20]], np.uint32)
    evaluator.process(gt, [Segment(1, 1), Segment(2, 2)], pred, [Segment(10, 1), Segment(20, 2)])
    results = evaluator.evaluate()
    assert results["semantic"]["per_class"] == pytest.approx({1: 2 / 3, 2: 3 / 5}, abs=1e-12)
    assert results["semantic"]["miou"] == pytest.approx(19 / 30, abs=1e-12)
    assert results["semantic"]["n"] == 2


def test_a_group_without_classes_scores_zero_instead_of_dividing_by_zero():
    evaluator = PanopticEvaluator([Category(1, "road", False), Category(26, "car", True)])
    ids = np.ones((4, 4), np.uint32)
    evaluator.process(ids, [Segment(1, 1)], ids * 9, [Segment(9, 1)])
    results = evaluator.evaluate()
    assert results["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert results["All"] == results["Stuff"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert results["semantic"]["per_class"][26] is None


def test_image_ids_as_rt_panoptic_infer_writes_them_match_by_file_stem(tmp_path):
    """rt-panoptic-infer names an image by its file stem: COCO's "000000000139.jpg" for id 139,
    Cityscapes' "<id>_leftImg8bit.png". Both find their ground truth; a double is refused."""
    args = write_pair(tmp_path)
    exact, _ = evaluate_files(*args[1::2], workers=1, progress=False)
    edit_json(tmp_path / "gt.json", lambda d: d.update(images=[{"id": "a", "file_name": "000000000139.jpg"}]))
    renamed = {"a": "000000000139", "b": "b_leftImg8bit"}
    edit_json(
        tmp_path / "pred.json",
        lambda d: [a.update(image_id=renamed[a["image_id"]]) for a in d["annotations"]],
    )
    by_stem, _ = evaluate_files(*args[1::2], workers=1, progress=False)
    assert by_stem == exact
    edit_json(
        tmp_path / "pred.json", lambda d: d["annotations"].append({**d["annotations"][0], "image_id": "a"})
    )
    with pytest.raises(
        DatasetError, match=r"annotations\[2\]\.image_id: 'a' predicts image 'a' again \(annotations\[0\]"
    ):
        evaluate_files(*args[1::2], workers=1, progress=False)


# --- the command line ----------------------------------------------------------------------


def test_cli_prints_a_table_and_writes_panopticapi_json(tmp_path):
    args = write_pair(tmp_path)
    output = tmp_path / "out" / "results.json"
    result = run_cli("rt-panoptic-eval", *args, "--workers", "1", "--output", str(output))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].replace("|", " ").split() == ["category", "PQ", "SQ", "RQ", "IoU", "kind"]
    assert any(line.startswith("person ") and "44.4" in line for line in lines)
    assert [line.split("|")[0].strip() for line in lines[-6:-2]] == ["", "All", "Things", "Stuff"]
    results = json.loads(output.read_text())
    assert set(results) == {"All", "Things", "Stuff", "per_class", "semantic", "images"}
    assert set(results["All"]) == {"pq", "sq", "rq", "n"}
    assert set(results["per_class"]) == {"1", "2", "24", "26"}  # category ids, as panopticapi writes them


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def pred_ann(data: dict, name: str = "a") -> dict:
    return next(a for a in data["annotations"] if a["image_id"] == name)


def break_png(path: Path, value: int) -> None:
    ids = read_panoptic_png(path)
    ids[0, 0] = value
    write_panoptic_png(path, ids)


BAD_INPUTS = {
    "missing ground-truth PNG": (
        lambda r: (r / "gt" / "b.png").unlink(),
        r"gt/b\.png: panoptic PNG not found",
    ),
    "corrupt prediction PNG (in a worker)": (
        lambda r: (r / "pred" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage"),
        r"pred/a\.png: cannot decode the panoptic PNG",
    ),
    "ground truth without categories": (
        lambda r: edit_json(r / "gt.json", lambda d: d.pop("categories")),
        r"gt\.json: top level: missing field 'categories'",
    ),
    "segment without category_id": (
        lambda r: edit_json(r / "pred.json", lambda d: pred_ann(d)["segments_info"][1].pop("category_id")),
        r"pred\.json: annotations\[0\]\.segments_info\[1\]: missing field 'category_id'",
    ),
    "prediction PNG id not in segments_info": (
        lambda r: break_png(r / "pred" / "a.png", 4242),
        r"pred/a\.png \(.*pred\.json: annotations\[0\] \(image_id 'a'\)\): segment id\(s\) 4242 in the PNG "
        r"are not listed in segments_info",
    ),
    "ground-truth PNG id not in segments_info": (
        lambda r: break_png(r / "gt" / "b.png", 31337),
        r"gt/b\.png \(.*gt\.json: annotations\[1\] \(image_id 'b'\)\): segment id\(s\) 31337 in the PNG",
    ),
    "prediction for an image the ground truth lacks": (
        lambda r: edit_json(
            r / "pred.json", lambda d: d["annotations"].append({**pred_ann(d), "image_id": "zz"})
        ),
        r"pred\.json: annotations\[2\]\.image_id: 'zz' is not an image of the ground truth .*gt\.json",
    ),
    "image without prediction": (
        lambda r: edit_json(r / "pred.json", lambda d: d["annotations"].pop(1)),
        r"pred\.json: no prediction for image_id 'b' \(.*gt\.json: annotations\[1\] \(image_id 'b'\)\)",
    ),
    "unknown category": (
        lambda r: edit_json(
            r / "pred.json", lambda d: pred_ann(d)["segments_info"][0].update(category_id=99)
        ),
        r"pred\.json: annotations\[0\] \(image_id 'a'\)\.segments_info: category_id 99 is not one of",
    ),
    "prediction JSON not JSON": (
        lambda r: (r / "pred.json").write_text("[{"),
        r"pred\.json: not valid JSON",
    ),
    "prediction of another size": (
        lambda r: write_panoptic_png(r / "pred" / "b.png", np.zeros((8, 8), np.uint32)),
        r"pred/b\.png .*: prediction is 8x8, its ground truth .*gt/b\.png .* is 16x24",
    ),
    "listed prediction segment missing from its PNG": (
        lambda r: edit_json(
            r / "pred.json", lambda d: pred_ann(d, "b")["segments_info"].append({"id": 3, "category_id": 1})
        ),
        r"pred/b\.png .*: segment id\(s\) \[3\] listed in segments_info are not in the PNG",
    ),
    "ground-truth folder missing": (
        lambda r: shutil.rmtree(r / "gt"),
        r"gt: --gt-dir is not a folder",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_file_and_field(tmp_path, capsys, case):
    args = write_pair(tmp_path)
    damage, message = BAD_INPUTS[case]
    damage(tmp_path)
    workers = "2" if "worker" in case else "1"
    assert main([*args, "--workers", workers]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("rt-panoptic-eval: error: ")
    assert re.search(message, captured.err), captured.err


def test_bad_input_through_the_installed_script_has_no_traceback(tmp_path):
    args = write_pair(tmp_path)
    break_png(tmp_path / "pred" / "a.png", 4242)
    result = run_cli("rt-panoptic-eval", *args, "--workers", "2")
    assert result.returncode == 1
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "segment id(s) 4242" in result.stderr
