"""The synthetic street-scene dataset: valid COCO panoptic files, deterministic by seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from rt_panoptic_ros.image_io import read_panoptic_png
from rt_panoptic_ros.image_io import read_rgb as read_image
from rt_panoptic_ros.training.data import PanopticDataset, synthetic_meta, write_dataset
from rt_panoptic_ros.training.data.synthetic import CLASSES, generate_scene
from rt_panoptic_ros.training.synth import main

H, W = 96, 192


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, num=12, seed=7, height=H, width=W, progress=False)
    return out


def test_every_png_id_is_listed_with_its_area_and_box(synth):
    data = json.loads((synth / "panoptic.json").read_text())
    categories = {c["id"]: c for c in data["categories"]}
    assert [img["id"] for img in data["images"]] == [f"synth_{i:06d}" for i in range(12)]
    seen_categories, crowds, void_pixels = set(), 0, 0
    for image, ann in zip(data["images"], data["annotations"], strict=True):
        assert ann["image_id"] == image["id"] and ann["file_name"] == f"{image['id']}.png"
        assert read_image(synth / "images" / image["file_name"]).shape == (H, W, 3)
        ids = read_panoptic_png(synth / "panoptic" / ann["file_name"])
        assert ids.shape == (H, W)
        listed = {s["id"]: s for s in ann["segments_info"]}
        assert set(np.unique(ids).tolist()) - {0} == set(listed)  # no unlisted id, no empty segment
        for segment_id, s in listed.items():
            ys, xs = np.nonzero(ids == segment_id)
            assert s["area"] == len(ys)
            assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            category = categories[s["category_id"]]
            assert s["iscrowd"] == int(category["isthing"] == 1 and segment_id < 1000)
            assert (
                segment_id // 1000 == s["category_id"]
                if segment_id >= 1000
                else segment_id == s["category_id"]
            )
            seen_categories.add(s["category_id"])
            crowds += s["iscrowd"]
        void_pixels += int((ids == 0).sum())
    assert seen_categories == set(categories)  # every class occurs in a dozen scenes
    assert crowds >= 1 and void_pixels > 0


def test_scenes_have_occlusion_and_a_range_of_scales():
    sizes, touching = [], 0
    for i in range(6):
        scene = generate_scene(np.random.default_rng([3, i]), H, W)
        sizes += [s["bbox"][3] for s in scene.segments if s["id"] >= 1000]
        # Occlusion: pixels of one thing next to pixels of another (drawn over each other).
        left, right = scene.ids[:, :-1], scene.ids[:, 1:]
        touching += int(((left >= 1000) & (right >= 1000) & (left != right)).sum())
    assert min(sizes) <= 8 and max(sizes) >= H // 2
    assert touching > 0


def test_same_seed_same_bytes_other_seed_other_scenes(synth, tmp_path):
    write_dataset(tmp_path / "again", num=3, seed=7, height=H, width=W, progress=False)
    write_dataset(tmp_path / "other", num=3, seed=8, height=H, width=W, progress=False)
    for name in ("images/synth_000002.png", "panoptic/synth_000002.png"):
        assert (tmp_path / "again" / name).read_bytes() == (
            synth / name
        ).read_bytes()  # and --num does not matter
        assert (tmp_path / "other" / name).read_bytes() != (synth / name).read_bytes()


def test_meta_matches_what_the_dataset_reads(synth):
    dataset = PanopticDataset(synth / "panoptic.json", synth / "panoptic", synth / "images", name="synthetic")
    meta = synthetic_meta()
    assert dataset.meta == meta
    assert meta.class_names == tuple(c[0] for c in CLASSES)
    assert [meta.class_names[t] for t in meta.thing_ids] == ["person", "car", "truck", "bicycle"]
    item = dataset[0]
    assert item["masks"].shape[0] == len(item["boxes"]) > 0
    assert int(item["semantic"].max()) == 255  # the sample has VOID


def test_cli_writes_the_dataset(tmp_path):
    result = run_cli("rt-panoptic-synth", str(tmp_path / "out"), "--num", "2", "--seed", "7",
                     "--height", str(H), "--width", str(W))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "panoptic").iterdir()) == [
        "synth_000000.png",
        "synth_000001.png",
    ]
    data = json.loads((tmp_path / "out" / "panoptic.json").read_text())
    assert len(data["annotations"]) == 2 and len(data["categories"]) == len(CLASSES)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num", "0"], "--num: 0, expected at least 1 image"),
        (["--num", "1", "--height", "8"], "--height/--width: 8x1024, expected 32 to 8192 pixels each"),
        (
            ["--num", "1", "--height", "60000", "--width", "60000"],
            "--height/--width: 60000x60000, expected 32 to 8192 pixels each",
        ),  # refused before any memory
        (["--num", "1", "--seed", "-1"], "--seed: -1, expected a non-negative integer"),
    ],
)
def test_cli_refuses_bad_arguments_in_one_line(tmp_path, capsys, args, message):
    assert main([str(tmp_path / "out"), *args]) == 1
    err = capsys.readouterr().err
    assert err == f"rt-panoptic-synth: error: {message}\n"


def test_cli_does_not_overwrite_unless_asked(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main([str(tmp_path / "out"), "--num", "1", "--height", "32", "--width", "64"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert main([str(tmp_path / "out"), "--num", "1", "--height", "32", "--width", "64", "--overwrite"]) == 0
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "out" / "panoptic" / "synth_000000.png").is_file()
