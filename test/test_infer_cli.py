"""rt-panoptic-infer end to end: a COCO panoptic predictions folder from real files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import rigged_model, run_cli

from rt_panoptic_ros.image_io import rgb_to_id
from rt_panoptic_ros.model import save_checkpoint


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_checkpoint(rigged_model(), tmp_path_factory.mktemp("model") / "rigged.pt")


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(128, 256), (150, 200), (96, 96)]):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"frame_{k}.{'png' if k != 1 else 'jpg'}"), image)
    (folder / "notes.txt").write_text("not an image, ignored by suffix")
    return folder


def read_png_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_writes_a_consistent_predictions_folder(model_file, image_dir, tmp_path):
    out = tmp_path / "pred"
    result = run_cli("rt-panoptic-infer", "--model", str(model_file), str(image_dir), "--output", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads((out / "panoptic.json").read_text())
    assert [a["image_id"] for a in document["annotations"]] == ["frame_0", "frame_1", "frame_2"]
    categories = {c["id"]: c for c in document["categories"]}
    assert len(categories) == 19 and categories[11]["isthing"] == 1 and categories[0]["isthing"] == 0
    total_instances = 0
    for annotation in document["annotations"]:
        ids = rgb_to_id(read_png_rgb(out / "panoptic" / annotation["file_name"]))
        overlay = read_png_rgb(out / "overlay" / annotation["file_name"])
        assert overlay.shape[:2] == ids.shape
        info = {s["id"]: s for s in annotation["segments_info"]}
        present = set(np.unique(ids).tolist()) - {0}
        assert present == set(info), "every PNG id is listed, and every listed id is present"
        for segment_id, segment in info.items():
            mask = ids == segment_id
            assert segment["area"] == int(mask.sum())
            ys, xs = np.nonzero(mask)
            assert segment["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert segment["category_id"] in categories and segment["iscrowd"] == 0
            assert 0 < segment["score"] <= 1
        total_instances += sum(categories[s["category_id"]]["isthing"] for s in info.values())
    assert total_instances > 0, "the rigged model should find things"
    assert "mean latency" in result.stderr


def test_single_image_file(model_file, image_dir, tmp_path):
    out = tmp_path / "one"
    result = run_cli("rt-panoptic-infer", "--model", str(model_file), str(image_dir / "frame_2.png"),
                     "--output", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [a["image_id"] for a in json.loads((out / "panoptic.json").read_text())["annotations"]] == [
        "frame_2"
    ]


def test_unreadable_image_is_named_and_the_rest_written(model_file, image_dir, tmp_path):
    (image_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "pred"
    result = run_cli("rt-panoptic-infer", "--model", str(model_file), str(image_dir), "--output", str(out))
    assert result.returncode == 1
    assert "broken.png: cannot decode the image" in result.stderr
    assert "1 of 4 image(s) failed" in result.stderr
    assert "Traceback" not in result.stderr
    written = [a["image_id"] for a in json.loads((out / "panoptic.json").read_text())["annotations"]]
    assert written == ["frame_0", "frame_1", "frame_2"]


def test_truncated_jpeg_and_broken_link_are_refused_by_name(model_file, image_dir, tmp_path):
    """cv2.imread would return the readable half of a truncated JPEG, the rest grey."""
    whole = (image_dir / "frame_1.jpg").read_bytes()
    (image_dir / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (image_dir / "gone.png").symlink_to(tmp_path / "nowhere.png")
    out = tmp_path / "pred"
    result = run_cli("rt-panoptic-infer", "--model", str(model_file), str(image_dir), "--output", str(out))
    assert result.returncode == 1
    assert "cut.jpg: cannot decode the image (corrupt, truncated or not an image)" in result.stderr
    assert f"gone.png: broken symbolic link (to {tmp_path / 'nowhere.png'})" in result.stderr
    assert "2 of 5 image(s) failed" in result.stderr and "Traceback" not in result.stderr
    written = [a["image_id"] for a in json.loads((out / "panoptic.json").read_text())["annotations"]]
    assert written == ["frame_0", "frame_1", "frame_2"]


def test_an_existing_output_is_replaced_only_when_asked(model_file, image_dir, tmp_path):
    out = tmp_path / "pred"
    assert (
        run_cli(
            "rt-panoptic-infer", "--model", str(model_file), str(image_dir), "--output", str(out)
        ).returncode
        == 0
    )
    (out / "mine.txt").write_text("kept")
    one = str(image_dir / "frame_2.png")
    refused = run_cli("rt-panoptic-infer", "--model", str(model_file), one, "--output", str(out))
    assert refused.returncode == 1
    expected = f"{out}: folder is not empty (use --overwrite to replace its predictions)"
    assert refused.stderr.strip() == f"rt-panoptic-infer: error: {expected}"
    assert len(json.loads((out / "panoptic.json").read_text())["annotations"]) == 3  # untouched
    replaced = run_cli(
        "rt-panoptic-infer", "--model", str(model_file), one, "--output", str(out), "--overwrite"
    )
    assert replaced.returncode == 0, replaced.stderr
    assert [a["image_id"] for a in json.loads((out / "panoptic.json").read_text())["annotations"]] == [
        "frame_2"
    ]
    assert sorted(p.name for p in (out / "panoptic").iterdir()) == ["frame_2.png"]  # no old PNGs beside it
    assert sorted(p.name for p in (out / "overlay").iterdir()) == ["frame_2.png"]
    assert (out / "mine.txt").read_text() == "kept"


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cuda:99", "device: cuda:99: this machine has "),  # no CUDA at all, or not 100 devices
        ("gpu", "device: 'gpu' is not a device (expected cpu, cuda, cuda:0, ...)"),
    ],
)
def test_a_device_this_machine_lacks_is_one_line(model_file, image_dir, tmp_path, device, expected):
    result = run_cli("rt-panoptic-infer", "--model", str(model_file), str(image_dir), "--output",
                     str(tmp_path / "o"), "--device", device)  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rt-panoptic-infer: error: ") and expected in lines[0]


def test_track_keeps_ids_across_the_frames_of_a_folder(model_file, tmp_path):
    """--track: frames in name order; an object keeps its id (the same picture three times
    keeps all of them), another picture brings new ids, stuff class c is 65536 + c."""
    folder = tmp_path / "video"
    folder.mkdir()
    first, other = (
        np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8) for seed in (5, 6)
    )
    for k, picture in enumerate([first, first, other, first]):
        cv2.imwrite(str(folder / f"{k:04d}.png"), picture)
    out = tmp_path / "pred"
    result = run_cli(
        "rt-panoptic-infer", "--model", str(model_file), str(folder), "--output", str(out), "--track"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads((out / "panoptic.json").read_text())
    things = {c["id"] for c in document["categories"] if c["isthing"]}
    frames = []
    for annotation in document["annotations"]:
        ids = rgb_to_id(read_png_rgb(out / "panoptic" / annotation["file_name"]))
        info = annotation["segments_info"]
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in info}
        for segment in info:
            is_thing = segment["category_id"] in things
            assert (segment["id"] <= 65535) if is_thing else (segment["id"] == 65536 + segment["category_id"])
        frames.append(sorted(s["id"] for s in info if s["category_id"] in things))
    assert frames[0] and frames[1] == frames[0] and frames[3] == frames[0]
    assert set(frames[2]) - set(frames[0]), "the other picture's objects take new ids"

    bad = run_cli(
        "rt-panoptic-infer", "--model", str(model_file), str(folder), "--output", str(tmp_path / "o"),
        "--track", "--iou-threshold", "0",
    )  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "rt-panoptic-infer: error: --max-age / --iou-threshold: iou_threshold must be in (0, 1], got 0.0"
    ]


def test_tracks_restart_where_the_video_changes(model_file, tmp_path):
    """run_inference(sequence_of=...): several videos in one folder, tracks start afresh in each."""
    from rt_panoptic_ros.infer import list_images, run_inference
    from rt_panoptic_ros.runtime import Predictor
    from rt_panoptic_ros.tracking import TrackingSettings

    folder = tmp_path / "videos"
    folder.mkdir()
    pictures = [np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8) for seed in (5, 6)]
    for video in ("a", "b"):  # the same two frames in each video
        for k, picture in enumerate(pictures):
            cv2.imwrite(str(folder / f"{video}_{k}.png"), picture)
    out = tmp_path / "pred"
    run_inference(
        Predictor(model_file), list_images(folder), out, tracking=TrackingSettings(),
        sequence_of=lambda path: path.stem.split("_")[0],
    )  # fmt: skip
    document = json.loads((out / "panoptic.json").read_text())
    ids = {
        a["image_id"]: sorted(s["id"] for s in a["segments_info"] if s["id"] < 65536)
        for a in document["annotations"]
    }
    assert ids["b_0"] == ids["a_0"] and ids["b_1"] == ids["a_1"], "video b starts from id 1 again"
    assert ids["a_1"] != list(range(1, len(ids["a_1"]) + 1)), "within a video the ids carry on"


class Payload:
    """A pickled object of this class is what an unsafe .pt holds."""


@pytest.mark.parametrize(
    "case", ["missing_model", "corrupt_model", "unsafe_model", "empty_folder", "missing_source"]
)
def test_errors_are_one_line(case, model_file, image_dir, tmp_path):
    model, source = str(model_file), str(image_dir)
    if case == "missing_model":
        model, expected = str(tmp_path / "nope.pt"), "nope.pt: no such file"
    elif case == "corrupt_model":
        (tmp_path / "bad.pt").write_bytes(b"not a model")
        model, expected = str(tmp_path / "bad.pt"), "bad.pt: not a PyTorch checkpoint"
    elif case == "unsafe_model":
        import torch

        torch.save({"weights": Payload()}, tmp_path / "unsafe.pt")
        model = str(tmp_path / "unsafe.pt")
        expected = "unsafe.pt: not a model file: it holds a Python object (test_infer_cli.Payload)"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        source, expected = str(tmp_path / "empty"), "empty: no images in this folder"
    else:
        source, expected = str(tmp_path / "absent"), "absent: no such file or folder"
    result = run_cli("rt-panoptic-infer", "--model", model, source, "--output", str(tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("rt-panoptic-infer: error: ")
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert "weights_only" not in result.stderr  # never a hint to turn safe loading off
