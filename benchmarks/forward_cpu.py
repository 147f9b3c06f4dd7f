"""Forward latency of RTPanoNet on the CPU, per preset, side by side in one run.

usage: python benchmarks/forward_cpu.py [--presets small_cityscapes tri_cityscapes]
           [--height 512 --width 1024] [--runs 10] [--warmup 2] [--output benchmarks/forward_cpu.json]

Random weights: latency does not depend on their values. Median and p90 over ``--runs``
forwards after ``--warmup`` untimed ones; the JSON holds the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from rt_panoptic_ros.config import preset
from rt_panoptic_ros.model import RTPanoNet
from rt_panoptic_ros.percentile import percentile
from rt_panoptic_ros.runtime.machine import write_benchmark


def time_forward(net: RTPanoNet, image: torch.Tensor, runs: int, warmup: int) -> list[float]:
    """Seconds per forward, ``runs`` times after ``warmup`` untimed forwards."""
    times = []
    with torch.inference_mode():
        for k in range(warmup + runs):
            start = time.perf_counter()
            net(image)
            if k >= warmup:
                times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small_cityscapes", "tri_cityscapes"])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", default=str(Path(__file__).with_name("forward_cpu.json")))
    args = parser.parse_args()

    image = torch.randint(0, 256, (1, 3, args.height, args.width), dtype=torch.uint8)
    results = []
    for name in args.presets:
        net = RTPanoNet(preset(name)).eval()
        times = time_forward(net, image, args.runs, args.warmup)
        ms = sorted(t * 1000 for t in times)
        row = {
            "preset": name,
            "backbone": net.cfg.model.backbone,
            "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
            "median_ms": round(statistics.median(ms), 1),
            "p90_ms": round(percentile(ms, 90), 1),
            "fps": round(1000 / statistics.median(ms), 2),
        }
        print(json.dumps(row), file=sys.stderr)
        results.append(row)
    write_benchmark(
        args.output, "forward latency, PyTorch eager, CPU, batch 1, float32",
        input=[args.height, args.width], runs=args.runs, warmup=args.warmup, results=results,
    )  # fmt: skip


if __name__ == "__main__":
    main()
