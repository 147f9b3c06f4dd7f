"""Cost of PanopticTracker.update per frame at 1024x2048, and where the time goes, on this CPU.

usage: python benchmarks/tracking.py [--height 1024] [--width 2048] [--instances 10 50 100]
           [--frames 40] [--threads 0 1] [--output benchmarks/tracking.json]

Scenes: ``--instances`` rectangles (40-160 px a side, two classes) at random places, each moving
at its own constant velocity (up to 6 px a frame), painted in id order (later ones hide parts
of earlier ones), with tight boxes and areas of their visible pixels, as the decoder returns
them. All frames are built first; then one tracker runs over them (the first frame, which only
starts tracks, is a warm-up) and each ``update`` is timed. Reported per instance count and
torch thread count (0 = torch's default): median and p90 ms per update, how many segments kept
their first frame's track id, and the median cost of its two full-image steps measured alone:
the sampled joint histogram (the default ``iou_stride``: 4 at 1024x2048) and the relabelling
of the instance image (``tracking.tracker.relabel``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from rt_panoptic_ros.panoptic.result import InstanceSegment, PanopticResult, instance_boxes
from rt_panoptic_ros.percentile import percentile
from rt_panoptic_ros.runtime.machine import write_benchmark
from rt_panoptic_ros.tracking import PanopticTracker
from rt_panoptic_ros.tracking.tracker import SAMPLED_PIXELS, relabel, sampling_stride


def scene(height: int, width: int, count: int, frames: int, seed: int = 0) -> list[PanopticResult]:
    """``frames`` results of ``count`` moving rectangles (see the module doc)."""
    rng = np.random.default_rng(seed)
    size = rng.integers(40, 161, (count, 2))  # w, h
    start = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - size)
    velocity = rng.uniform(-6, 6, (count, 2))
    classes = rng.choice([11, 13], count)
    results = []
    for f in range(frames):
        instance = torch.zeros(height, width, dtype=torch.int16)
        x1y1 = np.clip(start + velocity * f, 0, np.array([width, height]) - size).astype(int)
        for k, ((x, y), (w, h)) in enumerate(zip(x1y1, size, strict=True), start=1):
            instance[y : y + h, x : x + w] = k
        areas = torch.bincount(instance.reshape(-1).long(), minlength=count + 1)[1:].tolist()
        boxes = instance_boxes(instance, count).tolist()
        segments = [
            InstanceSegment(k, int(classes[k - 1]), 0.9, tuple(boxes[k - 1]), areas[k - 1])
            for k in range(1, count + 1)
            if areas[k - 1] > 0
        ]
        results.append(PanopticResult(torch.zeros(height, width, dtype=torch.uint8), instance, segments))
    return results


def median_ms(fn, runs: int) -> float:
    fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return round(statistics.median(seconds) * 1000, 3)


def measure(results: list[PanopticResult]) -> dict[str, float | int]:
    tracker = PanopticTracker()
    first = tracker.update(results[0])
    seconds, kept, total = [], 0, 0
    for result in results[1:]:
        start = time.perf_counter()
        tracked = tracker.update(result)
        seconds.append(time.perf_counter() - start)
    # the last frame's ids against the first frame's, by input id (same object)
    by_input = {s.id: t.id for s, t in zip(results[0].segments, first.segments, strict=True)}
    for s, t in zip(results[-1].segments, tracked.segments, strict=True):
        total += 1
        kept += by_input.get(s.id) == t.id
    ms = sorted(s * 1000 for s in seconds)

    instance = results[1].instance
    stride = sampling_stride(*instance.shape)
    previous = results[0].instance[::stride, ::stride].to(torch.int32)
    bins = int(max(instance.max(), results[0].instance.max())) + 1
    sampled = instance[::stride, ::stride].to(torch.int32)
    histogram = median_ms(lambda: torch.bincount((previous * bins + sampled).reshape(-1)), 30)
    table = np.arange(bins, dtype=np.int64)
    relabelling = median_ms(lambda: relabel(instance, table), 30)
    return {
        "updates": len(seconds),
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "histogram_ms": histogram,
        "relabel_ms": relabelling,
        "ids_kept_first_to_last": f"{kept}/{total}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--instances", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--output", default="benchmarks/tracking.json")
    args = parser.parse_args(argv)

    default_threads = torch.get_num_threads()
    rows = []
    for count in args.instances:
        results = scene(args.height, args.width, count, args.frames)
        for threads in args.threads:
            torch.set_num_threads(threads or default_threads)
            row = {"instances": count, "torch_threads": torch.get_num_threads(), **measure(results)}
            print(row)
            rows.append(row)
    torch.set_num_threads(default_threads)
    write_benchmark(
        args.output,
        "tracking_update",
        image=[args.height, args.width],
        frames=args.frames,
        tracker={
            "max_age": 30,
            "iou_threshold": 0.3,
            "iou_stride": sampling_stride(args.height, args.width),
            "sampled_pixels": SAMPLED_PIXELS,
        },
        results=rows,
    )


if __name__ == "__main__":
    main()
