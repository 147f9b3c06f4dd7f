"""draw_overlay before and after the combined-id rewrite, side by side, on this CPU.

usage: python benchmarks/overlay.py [--height 1024] [--width 2048] [--instances 3 30]
           [--runs 40] [--output benchmarks/overlay.json]

Scenes: ``busy_scene`` of ``test/test_visualization.py`` (noise image, 60 stuff rectangles, a
void band, overlapping instance rectangles with tight boxes), one per ``--instances``. For
each scene, one warm-up call each, then ``--runs`` rounds in which the old overlay (the test
file's ``reference_overlay``, per-instance mask assignment), the new one, and the new one at
``scale=0.5`` each run once, the order rotating every round, so that a shared machine's
changing load falls on all alike. Then the new one alone, ``--runs`` calls back to back
(warm caches, its result's memory reused: the best case, for comparison). Reported: median
and p90 ms, old / new ratios of the interleaved medians, and whether new and old give the
same pixels.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))

from test_visualization import NAMES, busy_scene, reference_overlay  # noqa: E402

from rt_panoptic_ros.percentile import percentile  # noqa: E402
from rt_panoptic_ros.runtime.machine import write_benchmark  # noqa: E402
from rt_panoptic_ros.visualization import draw_overlay  # noqa: E402


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(percentile(ms, 90), 3)}


def measure(height: int, width: int, instances: int, runs: int) -> dict[str, object]:
    rgb, semantic, instance, segments = busy_scene(height, width, instances, seed=instances)
    calls = {
        "old": lambda: reference_overlay(rgb, semantic, instance, segments, NAMES),
        "new": lambda: draw_overlay(rgb, semantic, instance, segments, NAMES),
        "new_scale_0.5": lambda: draw_overlay(rgb, semantic, instance, segments, NAMES, scale=0.5),
    }
    same = bool(np.array_equal(calls["old"](), calls["new"]()))
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for k in range(runs):
        for name in names[k % 3 :] + names[: k % 3]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    back_to_back = []  # the new one alone: no old overlay between calls to evict caches and
    for _ in range(runs):  # return memory to the kernel, so fewer page faults on its result
        start = time.perf_counter()
        calls["new"]()
        back_to_back.append(time.perf_counter() - start)
    result: dict[str, object] = {"instances": instances, "same_pixels_as_old": same}
    result.update({name: summary(t) for name, t in times.items()})
    result["new_back_to_back"] = summary(back_to_back)
    old = statistics.median(times["old"])
    result["old_over_new"] = round(old / statistics.median(times["new"]), 2)
    result["old_over_new_scale_0.5"] = round(old / statistics.median(times["new_scale_0.5"]), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--instances", type=int, nargs="+", default=[3, 30])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--output", default=str(Path(__file__).with_name("overlay.json")))
    args = parser.parse_args()

    scenes = []
    for instances in args.instances:
        scenes.append(measure(args.height, args.width, instances, args.runs))
        s = scenes[-1]
        old, new, small = (s[name]["median_ms"] for name in ("old", "new", "new_scale_0.5"))
        alone = s["new_back_to_back"]["median_ms"]
        print(f"{instances:3d} instances: old {old:.2f} ms, new {new:.2f} ms (x{s['old_over_new']}), "
              f"new at scale 0.5 {small:.2f} ms, new back to back {alone:.2f} ms, "
              f"same pixels: {s['same_pixels_as_old']}")  # fmt: skip
    write_benchmark(
        args.output, "overlay", height=args.height, width=args.width, runs=args.runs, scenes=scenes
    )


if __name__ == "__main__":
    main()
