"""The trainer end to end on a tiny synthetic set: learning, DDP, exact resume, checkpoints, bad input."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, run_cli

from rt_panoptic_ros import load_model
from rt_panoptic_ros.training.data import write_dataset
from rt_panoptic_ros.training.engine import Trainer
from rt_panoptic_ros.training.train import main as train_main
from rt_panoptic_ros.training.train_config import load_config

#: A narrow network (conftest.tiny_config's widths) on 128x256 images: a step takes ~0.1 s.
TINY = {
    "model": {
        "backbone": "resnet18", "backbone_weights": None, "trainable_backbone_layers": 5,
        "fpn_channels": 32, "semantic_channels": 16, "localization_channels": 32, "tower_convs": 1,
    },
    "input": {"channel_order": "rgb", "pixel_mean": [123.675, 116.28, 103.53],
              "pixel_std": [58.395, 57.12, 57.375]},
    "decoder": {"stuff_area": 64},
    "data": {"format": "folder", "augment": "flip", "workers": 0},
    "targets": {"level_bounds": [32, 64, 128, 256]},
    "solver": {"batch_size": 2, "lr": 0.01, "steps": 40, "milestones": [30], "warmup_steps": 5},
    "run": {"seed": 0, "log_every": 5, "checkpoint_every": 1000, "imagenet": False},
}  # fmt: skip


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_train")
    write_dataset(out, num=6, seed=11, height=128, width=256, progress=False)
    return out


@pytest.fixture
def config_file(tmp_path, synth) -> Path:
    data = {**TINY, "data": {**TINY["data"], "root": str(synth)}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def trainer(config_file: Path, out: Path, *overrides: str, max_steps: int | None = None) -> Trainer:
    return Trainer(load_config(config_file, list(overrides)), out, max_steps=max_steps, progress=False)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_loss_decreases_over_a_few_dozen_steps(config_file, tmp_path):
    t = trainer(config_file, tmp_path / "run", "run.checkpoint_every=1000")
    totals = []
    for batch in t.batches():
        totals.append(t.train_step(batch)["total"])
        if len(totals) == 30:
            break
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last < 0.7 * first, totals


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(config_file, tmp_path):
    straight = trainer(config_file, tmp_path / "straight", max_steps=6)
    straight.train()
    first = trainer(config_file, tmp_path / "split", max_steps=3)
    first.train()
    second = trainer(config_file, tmp_path / "split", max_steps=6)
    second.resume()
    assert second.step == 3
    second.train()
    a, b = weights(straight.model), weights(second.model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    # Not trivially equal: training moved the weights.
    fresh = weights(trainer(config_file, tmp_path / "fresh").model)
    assert any(not torch.equal(a[k], fresh[k]) for k in a)
    # The checkpoint is a model file the package loads as is.
    model = load_model(tmp_path / "split" / "last.pt")
    assert all(torch.equal(v, b[k]) for k, v in model.state_dict().items())
    assert model.cfg.dataset.class_names[-1] == "bicycle"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    # A huge rate with no clipping blows the weights up at the first update.
    args = ["--config", str(config_file), "--output-dir", str(out), "solver.lr=1e30",
            "solver.warmup_steps=0", "solver.clip_grad_norm=0", "run.checkpoint_every=1"]  # fmt: skip
    assert train_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "non-finite loss" in err[-1] and str(out / "last.pt") in err[-1], err
    good = torch.load(out / "last.pt", weights_only=True)
    assert good["training"]["step"] >= 1
    model = load_model(out / "last.pt")
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


WRITER = textwrap.dedent(
    """
    import sys, pathlib, torch
    from rt_panoptic_ros.model.checkpoint import atomic_torch_save
    # ~400 MB: writing takes long enough to be killed in the middle
    atomic_torch_save({"format": "x", "blob": torch.zeros(100_000_000)}, pathlib.Path(sys.argv[1]))
    """
)


def test_a_checkpoint_killed_mid_write_never_replaces_the_last_good_one(config_file, tmp_path):
    out = tmp_path / "run"
    trainer(config_file, out, max_steps=1).train()
    good = out / "last.pt"
    before = good.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(good)])
    deadline = time.monotonic() + 60
    partial = []
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in out.glob(".last.pt.*.tmp") if p.stat().st_size > 1_000_000]
        if partial:
            break
        time.sleep(0.01)
    assert partial, "the writer never started writing its temporary file"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert good.read_bytes() == before  # untouched: the rename never happened
    assert load_model(good) is not None
    # Resuming from it works.
    t = trainer(config_file, out, max_steps=2)
    t.resume()
    assert t.step == 1


@pytest.mark.slow
def test_two_process_torchrun_on_cpu(config_file, tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "rt_panoptic_ros.training.train",
         "--config", str(config_file), "--output-dir", str(out), "--max-steps", "3"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es), 1 image(s) per step each" in result.stderr
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["training"]["step"] == 3 and state["training"]["world"] == 2
    load_model(out / "model_final.pt")


def test_unknown_key_is_named_with_its_close_matches(config_file):
    result = run_cli("rt-panoptic-train", "--config", str(config_file), "solver.lrr=0.1", "--max-steps", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "solver.lrr: unknown key; did you mean solver.lr?" in lines[0]


def test_unknown_key_in_the_yaml_file(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  fpn_chanels: 64\n")
    assert train_main(["--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "model.fpn_chanels: unknown key; did you mean model.fpn_channels" in err and "\n" not in err


def test_missing_dataset_path(config_file, tmp_path, capsys):
    assert train_main(["--config", str(config_file), "data.root=/nonexistent/synth"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "rt-panoptic-train: error: data.root: /nonexistent/synth: no such folder "
        "(rt-panoptic-synth OUT writes a synthetic one)"
    )


def test_resume_from_a_torn_or_foreign_checkpoint(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    trainer(config_file, out, max_steps=1).train()
    capsys.readouterr()
    args = ["--config", str(config_file), "--output-dir", str(out), "--resume", "--max-steps", "2"]
    # Torn: the first half of a real checkpoint.
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    assert train_main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "not a PyTorch checkpoint" in err and "\n" not in err
    # Foreign: a model file without training state, and something that is not ours at all.
    (out / "model_final.pt").replace(out / "last.pt")
    assert train_main(args) == 1
    assert "without training state; cannot resume" in capsys.readouterr().err
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, out / "last.pt")
    assert train_main(args) == 1
    assert "not an rt_panoptic_ros checkpoint" in capsys.readouterr().err
    # A different network: its weights do not fit.
    other = trainer(config_file, tmp_path / "other", "model.fpn_channels=64", max_steps=1)
    other.train()
    (tmp_path / "other" / "last.pt").replace(out / "last.pt")
    assert train_main(args) == 1
    assert "weights do not fit the network" in capsys.readouterr().err


def test_shipped_configs_parse():
    names = {p.stem for p in (ROOT / "config" / "training").glob("*.yaml")}
    assert {"cityscapes", "coco", "cityscapes_weak", "synthetic"} <= names
    for name in names:
        cfg = load_config(ROOT / "config" / "training" / f"{name}.yaml")
        assert cfg.solver.steps > 0
    coco = load_config(ROOT / "config" / "training" / "coco.yaml")
    assert coco.loss.semantic_weight == 0.4 and coco.solver.milestones == (120000, 160000)
    weak = load_config(ROOT / "config" / "training" / "cityscapes_weak.yaml")
    assert weak.targets.weak and not weak.loss.mask_loss


def test_evaluation_and_tensorboard_scalars(config_file, synth, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    t = trainer(
        config_file, out, f"data.val_root={synth}", "run.eval_images=2", "run.log_every=1", max_steps=2
    )
    report = t.train()
    assert {"PQ", "PQ_th", "PQ_st", "mIoU"} <= report.keys()
    assert 0.0 <= report["PQ"] <= 100.0 and report["mIoU"] > 0.0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"loss/{name}" for name in ("total", "box_reg", "mask", "semantic")} | {"eval/PQ", "lr"} <= tags
    assert [e.step for e in events.Scalars("loss/total")] == [1, 2]


def see_roads_skies_and_cars(model: torch.nn.Module) -> None:
    """Head biases that make an untrained network answer with cars, road and sky (in place).

    Every P3 location proposes a 32 x 32 car box and road, sky and car share the semantic map
    (the random features decide between them), so the decoder has things, stuff and void.
    """
    meta, head = model.cfg.dataset, model.head
    with torch.no_grad():
        head.box_cls.bias.fill_(-10.0)
        head.box_cls.bias[meta.thing_ids.index(meta.class_names.index("car"))] = 10.0
        head.centerness.bias.fill_(5.0)
        head.box_reg.conv.weight.zero_()
        head.box_reg.conv.bias.fill_(math.log(16.0))
        head.levelness.conv.bias.fill_(-10.0)
        head.levelness.conv.bias[1] = 10.0  # P3
        head.semantic.conv.bias.fill_(-10.0)
        for name in ("road", "sky", "car"):
            head.semantic.conv.bias[meta.class_names.index(name)] = 3.0


def test_logged_pq_is_rt_panoptic_eval_of_the_predictors_outputs(config_file, synth, tmp_path, capsys):
    """The PQ a run logs is the Predictor's: with an input size of another aspect ratio than the
    images (128x128 for 128x256), Trainer.validate's scores equal rt-panoptic-eval's on
    rt-panoptic-infer's predictions of the same checkpoint (stretching the images to the input
    size instead of fitting them, as the trainer once did, logs PQ 59.0 here instead of 64.3)."""
    import json
    import shutil

    from rt_panoptic_ros import Predictor
    from rt_panoptic_ros.cli import infer_main
    from rt_panoptic_ros.infer import run_inference
    from rt_panoptic_ros.training.evaluate import main as eval_main

    # A few detections, and masks at P_sem = 1/3 (three classes share the semantic map).
    tuned = ["input.height=128", "input.width=128", "decoder.max_detections=10", "decoder.mask_thresh=0.1"]
    rigged = trainer(config_file, tmp_path / "run", *tuned)
    see_roads_skies_and_cars(rigged.model)
    model_file = rigged.save()
    # Ground truth: the network's own answer at the images' own size, on two of the images.
    gt = tmp_path / "gt"
    (gt / "images").mkdir(parents=True)
    images = [shutil.copy(p, gt / "images") for p in sorted((synth / "images").iterdir())[:2]]
    run_inference(Predictor(model_file, input_size=(0, 0)), [Path(p) for p in images], gt)
    document = json.loads((synth / "panoptic.json").read_text())
    document["images"] = [i for i in document["images"] if (gt / "images" / i["file_name"]).exists()]
    document["annotations"] = json.loads((gt / "panoptic.json").read_text())["annotations"]
    (gt / "panoptic.json").write_text(json.dumps(document))

    evaluating = trainer(config_file, tmp_path / "run", *tuned, f"data.val_root={gt}")
    evaluating.resume()
    logged = evaluating.validate()

    pred = tmp_path / "pred"
    assert infer_main([str(gt / "images"), "--model", str(model_file), "--output", str(pred)]) == 0
    assert eval_main(["--gt-json", str(gt / "panoptic.json"), "--gt-dir", str(gt / "panoptic"),
                      "--pred-json", str(pred / "panoptic.json"), "--pred-dir", str(pred / "panoptic"),
                      "--output", str(tmp_path / "scores.json"), "--workers", "1"]) == 0  # fmt: skip
    capsys.readouterr()
    scores = json.loads((tmp_path / "scores.json").read_text())
    expected = {
        "PQ": 100 * scores["All"]["pq"], "PQ_th": 100 * scores["Things"]["pq"],
        "PQ_st": 100 * scores["Stuff"]["pq"], "mIoU": 100 * scores["semantic"]["miou"],
    }  # fmt: skip
    assert logged == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert logged["PQ_th"] > 0 and logged["PQ_st"] > 0  # things and stuff both took part


def test_slim_checkpoint_in_half_precision_keeps_the_outputs(config_file, tmp_path):
    from rt_panoptic_ros.training.slim_checkpoint import main as slim_main

    out = tmp_path / "run"
    trainer(config_file, out, max_steps=1).train()
    half = tmp_path / "half.pt"
    assert slim_main([str(out / "last.pt"), str(half), "--half", "decoder.mask_thresh=0.15"]) == 0
    assert half.stat().st_size < 0.6 * (out / "model_final.pt").stat().st_size
    full, small = load_model(out / "model_final.pt"), load_model(half)
    assert all(p.dtype == torch.float32 for p in small.parameters())  # runs in fp32
    assert small.cfg.decoder.mask_thresh == 0.15 and full.cfg.decoder.mask_thresh == 0.4
    images = torch.randint(0, 255, (1, 3, 128, 256), dtype=torch.uint8)
    with torch.no_grad():
        a, b = full(images), small(images)
    assert torch.allclose(a.semantic_logits, b.semantic_logits, rtol=1e-2, atol=1e-2)
    assert slim_main([str(out / "nothing.pt"), str(tmp_path / "x.pt")]) == 1
    assert slim_main([str(half), str(tmp_path / "x.pt"), "model.fpn_channels=8"]) == 1
    assert slim_main([str(half), str(tmp_path / "x.pt"), "decoder.mask_tresh=0.1"]) == 1


def test_imagenet_weights_are_taken_from_the_local_cache_only(tmp_path):
    import dataclasses

    import torchvision
    from conftest import tiny_config

    from rt_panoptic_ros.training.model_init import build_model

    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone_weights="IMAGENET1K_V1"))
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        model, note = build_model(cfg, use_imagenet=True)  # nothing cached: random, no download
        assert note.startswith("backbone: random initialisation") and str(tmp_path) in note
        # A locally built stand-in for the ImageNet file, where torchvision would cache it.
        reference = torchvision.models.resnet18()
        url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
        (tmp_path / "checkpoints").mkdir()
        torch.save(reference.state_dict(), tmp_path / "checkpoints" / Path(url).name)
        model, note = build_model(cfg, use_imagenet=True)
    finally:
        torch.hub.set_dir(previous)
    assert note.startswith("backbone: ImageNet IMAGENET1K_V1")
    assert torch.equal(model.backbone.body.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert model.cfg.model.backbone_weights is None  # load_model must never try to fetch them


def test_a_corrupt_image_in_a_worker_is_named_once(synth, tmp_path):
    data = tmp_path / "data"
    write_dataset(data, num=3, seed=11, height=128, width=256, progress=False)
    broken = data / "images" / "synth_000001.png"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated PNG
    config = {**TINY, "data": {**TINY["data"], "root": str(data), "workers": 1}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("rt-panoptic-train", "--config", str(path), "--output-dir", str(tmp_path / "run"),
                     "--max-steps", "4", "--device", "cpu")  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"rt-panoptic-train: error: {broken}: cannot decode the image (corrupt, truncated or not an image)"
    ]
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr


@pytest.mark.parametrize("device", ["cuda:99", "gpu"])
def test_a_device_this_machine_lacks_is_one_line(config_file, device, capsys):
    assert train_main(["--config", str(config_file), "--device", device, "--max-steps", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rt-panoptic-train: error: --device: ") and "\n" not in err
