"""Decoder latency on the CPU versus query count and image size.

usage: python benchmarks/decoder.py [--queries 10 50 100] [--sizes 512x1024 1024x2048]
           [--runs 10] [--output benchmarks/decoder.json]

The head outputs are the hand-built scenes of the test suite (test/scenes.py): K cars and
people laid out in rows over a road/sky background, each detected by one seed, so the
decoder really produces K instances with masks of realistic size (the [pixels x queries]
work that dominates). Median and p90 over ``--runs`` calls after two warm-up calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))

from scenes import CAR, PERSON, Obj, centre_seed, make_outputs, scene_config  # noqa: E402

from rt_panoptic_ros.panoptic import decode  # noqa: E402
from rt_panoptic_ros.runtime.machine import write_benchmark  # noqa: E402


def street_scene(height: int, width: int, queries: int):
    """``queries`` objects in rows of 20, each about 1/20 of the width by 1/12 of the height."""
    cols = 20
    objects = []
    for k in range(queries):
        row, col = divmod(k, cols)
        x1, y1 = col * (width // cols), height // 8 + row * (height // 12)
        box = (x1, y1, x1 + width // cols - 16, y1 + height // 12 - 8)
        box = tuple(v // 8 * 8 for v in box)  # the scenes want multiples of 8
        objects.append(Obj(box, CAR if k % 2 else PERSON, seeds=[centre_seed(box)]))
    return make_outputs(height, width, objects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--sizes", nargs="+", default=["512x1024", "1024x2048"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--output", default=str(Path(__file__).with_name("decoder.json")))
    args = parser.parse_args()

    cfg = scene_config()
    rows = []
    for size in args.sizes:
        height, width = (int(v) for v in size.split("x"))
        for queries in args.queries:
            outputs = street_scene(height, width, queries)
            for _ in range(2):
                result = decode(outputs, cfg, (height, width))[0]
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                decode(outputs, cfg, (height, width))
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            row = {
                "height": height, "width": width, "queries": queries,
                "instances": len(result.segments),
                "median_ms": round(statistics.median(times), 1),
                "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 1),
            }  # fmt: skip
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    write_benchmark(
        args.output, "panoptic decoder (rt_panoptic_ros.panoptic.decode), CPU, batch 1, float32",
        runs=args.runs, results=rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
