"""Per-stage latency of a :class:`~rt_panoptic_ros.runtime.Predictor`: what ``rt-panoptic-bench`` measures.

One frame runs the Predictor's own four stages, with the device synchronised after each so
that every stage's time is its own:

- ``upload``: numpy image -> padded uint8 batch on the device (pinned copy, resize, pad);
- ``network``: the backend (torch / onnxruntime / tensorrt);
- ``decode``: the panoptic decoder on the device, maps at the image's size;
- ``download``: the final maps to the host.

``end_to_end`` is the sum per frame; ``fps`` is frames over the wall time of the timed loop
(so it follows the mean, not the median). Median, p90 (nearest rank) and mean are over
``frames`` frames after ``warmup`` untimed ones.
"""

from __future__ import annotations

import importlib.metadata
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rt_panoptic_ros.config import PRESETS, preset
from rt_panoptic_ros.errors import CheckpointError, ConfigError
from rt_panoptic_ros.model import RTPanoNet, save_checkpoint
from rt_panoptic_ros.percentile import percentile
from rt_panoptic_ros.runtime.machine import describe_machine
from rt_panoptic_ros.runtime.predictor import Predictor

STAGES: tuple[str, ...] = ("upload", "network", "decode", "download")


def time_stages(predictor: Predictor, image: np.ndarray, frames: int, warmup: int) -> dict[str, Any]:
    """Run ``warmup + frames`` frames of ``image`` and summarise the last ``frames``.

    Returns:
        ``{"stages": {stage: {"median_ms", "p90_ms", "mean_ms"}}, "end_to_end": {...}, "fps": float,
        "instances": int}`` (instances found in the last frame).

    Raises:
        ConfigError: ``frames < 1`` or ``warmup < 0``.
    """
    if frames < 1 or warmup < 0:
        raise ConfigError(f"frames: {frames}, warmup: {warmup}; expected frames >= 1 and warmup >= 0")
    sync = synchronizer(predictor.device)
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    results: list = []
    started = 0.0
    for k in range(warmup + frames):
        if k == warmup:
            started = time.perf_counter()
        t0 = time.perf_counter()
        batch = predictor.upload([image])
        sync()
        t1 = time.perf_counter()
        outputs = predictor.infer(batch.images)
        sync()
        t2 = time.perf_counter()
        decoded = predictor.decode(outputs, batch)
        sync()
        t3 = time.perf_counter()
        results = predictor.download(decoded)
        t4 = time.perf_counter()
        if k >= warmup:
            for stage, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4)), strict=True):
                times[stage].append((b - a) * 1000)
    wall = time.perf_counter() - started
    totals = [sum(parts) for parts in zip(*times.values(), strict=True)]
    return {
        "stages": {stage: summarize(ms) for stage, ms in times.items()},
        "end_to_end": summarize(totals),
        "fps": round(frames / wall, 2),
        "instances": len(results[0].segments),
    }


def time_calls(predictor: Predictor, images: Sequence[np.ndarray], count: int) -> dict[str, float]:
    """One warm-up call, then ``count`` calls of ``predictor`` on ``images`` in turn, as an
    application calls it (frame after frame, end to end).

    Returns:
        ``{"fps", "median_ms", "cpu_ms"}``: calls per second of wall time, the median call, and
        the process's CPU time per call (all threads: torch's team included).
    """
    predictor(images[0])
    times = []
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(count):
        begin = time.perf_counter()
        predictor(images[k % len(images)])
        times.append(time.perf_counter() - begin)
    return {
        "fps": count / (time.perf_counter() - start),
        "median_ms": statistics.median(times) * 1000,
        "cpu_ms": (time.process_time() - cpu) / count * 1000,
    }


def summarize(ms: list[float]) -> dict[str, float]:
    """Median, p90 (nearest rank) and mean of a list of milliseconds, rounded to 0.01 ms."""
    ordered = sorted(ms)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(percentile(ordered, 90), 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A call that waits for ``device`` to finish its queued work (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def run_benchmark(
    models: Sequence[str],
    backends: Sequence[str],
    height: int,
    width: int,
    precision: str | None = None,
    frames: int = 20,
    warmup: int = 3,
    device: str | None = None,
    cuda_graph: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every model on every backend, side by side, on one random ``height x width`` image.

    Args:
        models: model files, or preset names (built with random weights, seed 0, in a
            temporary folder: latency does not depend on the weights' values).
        precision, device: as the Predictor takes them; ``None``: each backend's default.

    Returns:
        The JSON-ready report: input, frames, machine, libraries, and one row per
        (model, backend) with the numbers of :func:`time_stages`.
    """
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rt-panoptic-bench-") as workdir:
        for model in models:
            path, label = resolve_model(model, Path(workdir))
            for backend in backends:
                predictor = Predictor(
                    path, device=device, backend=backend, precision=precision,
                    input_size=(height, width), cuda_graph=cuda_graph,
                )  # fmt: skip
                backend_name, precision_used = predictor.backend.name, predictor.backend.precision
                if progress:
                    progress(f"{label}: {backend_name} on {predictor.device} ({precision_used}) ...")
                numbers = time_stages(predictor, image, frames, warmup)
                row = {
                    "model": label,
                    "backbone": predictor.cfg.model.backbone,
                    "backend": backend_name,
                    "device": str(predictor.device),
                    "precision": precision_used,
                    "cuda_graph": cuda_graph,
                    # torch's own TF32 switch: "fp32" convolutions on Ampere+ are TF32 while it is on
                    "tf32": torch.backends.cudnn.allow_tf32 if predictor.device.type == "cuda" else None,
                    **numbers,
                }
                if progress:
                    stages = ", ".join(f"{k} {v['median_ms']:.1f}" for k, v in numbers["stages"].items())
                    total = numbers["end_to_end"]["median_ms"]
                    progress(f"  median ms: {stages}; end to end {total:.1f} ms, {numbers['fps']:.2f} FPS")
                rows.append(row)
                del predictor
    return {
        "benchmark": "rt-panoptic-bench: Predictor latency per stage (upload, network, decode, download)",
        "input": [height, width],
        "batch": 1,
        "frames": frames,
        "warmup": warmup,
        "machine": describe_machine(),
        "libraries": libraries(),
        "results": rows,
    }


def resolve_model(model: str, workdir: Path) -> tuple[Path, str]:
    """``model`` as a model file and a label: the file itself, or a preset saved in ``workdir``.

    Raises:
        CheckpointError: neither an existing file nor a preset name.
    """
    path = Path(model)
    if path.exists():
        return path, str(path)
    if model in PRESETS:
        torch.manual_seed(0)
        network = RTPanoNet(preset(model)).eval()
        saved = save_checkpoint(
            network, workdir / f"{model}.pt", meta={"source": "random weights (benchmark)"}
        )
        return saved, f"{model} (random weights)"
    raise CheckpointError(f"{model}: no such model file, nor a preset ({', '.join(PRESETS)})")


def libraries() -> dict[str, str | None]:
    """Versions of the inference libraries (``None`` where not installed)."""
    versions: dict[str, str | None] = {}
    for name in ("onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "torchvision"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
