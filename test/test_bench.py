"""rt-panoptic-bench: per-stage latency of the Predictor, as JSON with the command and machine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import rigged_model, run_cli

from rt_panoptic_ros import Predictor
from rt_panoptic_ros.cli import EXIT_ERROR, bench_main
from rt_panoptic_ros.errors import ConfigError
from rt_panoptic_ros.runtime.bench import STAGES, summarize, time_calls, time_stages


def test_summary_is_median_and_nearest_rank_p90():
    assert summarize([float(v) for v in range(10, 0, -1)]) == {
        "median_ms": 5.5,
        "p90_ms": 9.0,
        "mean_ms": 5.5,
    }
    assert summarize([3.0, 1.0, 2.0, 10.0]) == {"median_ms": 2.5, "p90_ms": 10.0, "mean_ms": 4.0}


def test_stages_add_up_to_a_frame():
    predictor = Predictor(rigged_model())
    image = np.random.default_rng(0).integers(0, 256, (128, 256, 3), dtype=np.uint8)
    numbers = time_stages(predictor, image, frames=3, warmup=1)
    assert list(numbers["stages"]) == list(STAGES) == ["upload", "network", "decode", "download"]
    for stage in numbers["stages"].values():
        assert 0 <= stage["median_ms"] <= stage["p90_ms"]
    network = numbers["stages"]["network"]["median_ms"]
    assert network > 0 and numbers["end_to_end"]["median_ms"] >= network
    # frames over wall time: the mean frame, plus the loop's own few microseconds
    assert numbers["fps"] == pytest.approx(1000 / numbers["end_to_end"]["mean_ms"], rel=0.1)
    assert numbers["instances"] > 3  # the rigged network's scene was decoded, not skipped
    with pytest.raises(ConfigError, match="frames: 0"):
        time_stages(predictor, image, frames=0, warmup=1)


def test_calls_are_timed_end_to_end_with_their_cpu_time():
    predictor = Predictor(rigged_model())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (128, 256, 3), dtype=np.uint8) for _ in range(2)]
    numbers = time_calls(predictor, images, count=3)
    assert set(numbers) == {"fps", "median_ms", "cpu_ms"}
    assert numbers["median_ms"] > 0 and numbers["cpu_ms"] > 0
    # calls over wall time: about one over the median call
    assert numbers["fps"] == pytest.approx(1000 / numbers["median_ms"], rel=0.5)


def test_bench_cli_side_by_side(tmp_path):
    """A preset (random weights) on torch and onnxruntime, one JSON with command and machine."""
    out = tmp_path / "bench.json"
    args = ["--model", "small_cityscapes", "--backend", "torch", "onnxruntime", "--height", "128",
            "--width", "256", "--frames", "2", "--warmup", "1", "--output", str(out)]  # fmt: skip
    result = run_cli("rt-panoptic-bench", *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["command"] == "rt-panoptic-bench " + " ".join(args)
    assert report["input"] == [128, 256] and report["frames"] == 2 and report["warmup"] == 1
    assert report["machine"]["cpu"] and "torch" in report["machine"]
    assert report["libraries"]["onnxruntime"]
    rows = report["results"]
    assert [(r["backend"], r["device"], r["precision"]) for r in rows] == [
        ("torch", "cpu", "fp32"),
        ("onnxruntime", "cpu", "fp32"),
    ]
    for row in rows:
        assert row["model"] == "small_cityscapes (random weights)" and row["backbone"] == "resnet18"
        assert set(row["stages"]) == set(STAGES) and row["fps"] > 0
        assert row["end_to_end"]["median_ms"] >= row["stages"]["network"]["median_ms"] > 0
    assert "small_cityscapes (random weights): onnxruntime on cpu (fp32) ..." in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "missing.pt"], "missing.pt: no such model file, nor a preset"),
        (
            ["--model", "small_cityscapes", "--height", "100"],
            "input.height: 100, expected 0 or a multiple of 128",
        ),
        (["--model", "small_cityscapes", "--precision", "fp16"], "fp16 needs a CUDA device"),
    ],
)
def test_bench_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert bench_main([*args, "--frames", "1"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rt-panoptic-bench: error: ") and message in err
