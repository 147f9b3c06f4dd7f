"""The node's per-frame work outside ROS, on the Predictor's device: the GPU case's stage times.

usage: python benchmarks/node_glue.py [--device cuda] [--frames 30] [--height 1024 --width 2048]
           [--node-json benchmarks/node.json] [--output benchmarks/node_glue.json]

``benchmarks/node.py`` measures the node through ROS on this CPU; on a GPU the pipeline runs
three threads (``rt_panoptic_ros/ros/pipeline.py``) and its rate is its slowest thread's. This
script times, on the bundled model (torch, fp16 on CUDA), every step of those threads that
needs no ROS, each synchronised on the device:

- prepare: ``upload`` (fit and copy the frame to the device);
- infer: ``network``, ``decode``, ``download`` (the maps to the host, for the messages), the
  Predictor's own stages as ``rt-panoptic-bench`` times them
  (:func:`~rt_panoptic_ros.runtime.bench.time_stages`);
- publish, frame by frame: ``track`` (the tracker, on the host maps), ``overlay`` as the node
  draws it: from the maps still on the device (``job.device_maps``; one image up, one down)
  on CUDA, from the host maps on a CPU; ``overlay_host`` beside it, the host path on the same
  maps.

The publish thread also builds and sends the ROS messages; that time, ``publish_p50_ms`` of
``--node-json`` (measured through DDS on the machine that wrote it), is added as measured
there. Then ``node_fps = 1000 / max(prepare, infer, publish)`` against the model's
``1000 / (network + decode)``. Runs without ROS and without an install (the checkout goes on
``sys.path``), so ``benchmarks/gpu_check.py`` runs it on a machine with a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a source checkout: no install needed
sys.path.insert(0, str(ROOT / "test"))

#: Untimed frames first (cuDNN autotuning, caches).
WARMUP = 3
#: The node's pipeline threads on a GPU and the steps of each measured here.
THREADS = {
    "prepare": ("upload",),
    "infer": ("network", "decode", "download"),
    "publish": ("track", "overlay"),
}


def measure(device: str, frames: int, size: tuple[int, int], node_json: Path | None) -> dict[str, Any]:
    """Per-step p50 ms, per-thread sums and the estimated node rate (see the module's doc)."""
    import torch
    from source_checkout import map_training_subpackage  # test/source_checkout.py

    from rt_panoptic_ros import Predictor
    from rt_panoptic_ros.allocator import keep_large_blocks
    from rt_panoptic_ros.image_io import read_rgb
    from rt_panoptic_ros.runtime.bench import STAGES, summarize, synchronizer, time_stages
    from rt_panoptic_ros.tracking import TrackingSettings
    from rt_panoptic_ros.visualization import draw_overlay

    keep_large_blocks()  # malloc as in the node's process
    predictor = Predictor(str(ROOT / "models" / "small_synthetic.pt"), backend="torch", device=device)
    cuda = predictor.device.type == "cuda"
    sync = synchronizer(predictor.device)
    map_training_subpackage()
    from rt_panoptic_ros.training.data.synthetic import write_dataset

    with tempfile.TemporaryDirectory(prefix="node_glue_") as folder:
        # street scenes, so that the decoder meets objects as in a camera image (noise does not)
        write_dataset(Path(folder), 4, seed=11, height=size[0], width=size[1], progress=False)
        images = [read_rgb(p) for p in sorted((Path(folder) / "images").iterdir())]
    names = predictor.cfg.dataset.class_names
    tracker = TrackingSettings().tracker()
    glue: dict[str, list[float]] = {"track": [], "overlay": [], "overlay_host": []}

    def timed(step: str, call: Callable[..., Any], *args: Any) -> Any:
        sync()
        started = time.perf_counter()
        value = call(*args)
        sync()
        glue[step].append((time.perf_counter() - started) * 1000)
        return value

    with torch.inference_mode():
        predictor_stages = time_stages(predictor, images[0], frames, WARMUP)["stages"]
        for k in range(frames + WARMUP):
            image = images[k % len(images)]
            batch = predictor.upload([image])
            (on_device,) = predictor.decode(predictor.infer(batch.images), batch)
            (result,) = predictor.download([on_device])
            tracked = timed("track", tracker.update, result, k * 50_000_000)  # 20 Hz stamps
            host_maps = (result.semantic.numpy(), result.segment_index.numpy())
            maps = (on_device.semantic, on_device.instance) if cuda else host_maps
            timed("overlay", draw_overlay, image, *maps, tracked.segments, names)
            timed("overlay_host", draw_overlay, image, *host_maps, tracked.segments, names)
    steps = {stage: predictor_stages[stage]["median_ms"] for stage in STAGES}
    steps |= {step: summarize(series[WARMUP:])["median_ms"] for step, series in glue.items()}
    threads = {name: round(sum(steps[s] for s in members), 2) for name, members in THREADS.items()}
    ros_publish = _ros_publish_ms(node_json)
    if ros_publish is not None:
        threads["publish"] = round(threads["publish"] + ros_publish, 2)
    model_ms = steps["network"] + steps["decode"]
    slowest = max(threads.values())
    return {
        "device": str(predictor.device),
        "precision": predictor.backend.precision,
        "input": list(size),
        "frames": frames,
        "step_p50_ms": steps,
        "ros_publish_p50_ms": ros_publish,
        "ros_publish_from": str(node_json) if ros_publish is not None else "not found: not added",
        "thread_ms": threads,
        "model_fps": round(1000 / model_ms, 1),
        "node_fps": round(1000 / slowest, 1),
        "node_over_model_rate": round(model_ms / slowest, 3),
    }


def _ros_publish_ms(path: Path | None) -> float | None:
    """The node's message building and publishing, p50 ms, from a ``benchmarks/node.py`` run."""
    try:
        record = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return None
    return record.get("node_stage_p50_ms_lockstep", {}).get("publish_p50_ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--node-json", type=Path, default=ROOT / "benchmarks" / "node.json")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("node_glue.json"))
    args = parser.parse_args(argv)
    from rt_panoptic_ros.runtime.machine import write_benchmark

    figures = measure(args.device, args.frames, (args.height, args.width), args.node_json)
    write_benchmark(args.output, "the node's per-frame work outside ROS, per pipeline thread", **figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
