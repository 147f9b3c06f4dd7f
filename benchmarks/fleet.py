"""A fleet's bags: one process against Ray with 1 and 2 workers, on this machine (CPU).

usage: python benchmarks/fleet.py [--bags 8] [--frames 6] [--height 256 --width 512]
           [--preset small_cityscapes] [--rounds 1] [--output benchmarks/fleet.json]

``--bags`` small bags of ``--frames`` random rgb8 frames each are written with rosbags; then
the real console script processes all of them into a new output folder, once per mode and
round (the order rotates between rounds, so that a shared machine's changing load falls on
every mode alike):

- ``sequential``: ``rt-panoptic-bag BAG... --output-dir DIR`` (one process, one Predictor),
  torch on every core (``--threads-per-worker <cores>``) and on one (``sequential_1_thread``);
- ``ray_1_worker``: ``--ray --workers 1``, torch on every core, and on one
  (``ray_1_worker_1_thread``);
- ``ray_2_workers``: ``--ray --workers 2 --threads-per-worker <cores / 2>``: the cores split
  between the workers, so their torch thread pools do not fight.

Each Ray run starts its own local cluster, as a laptop user's would. Per mode: the wall time
of the command (start-up included), the start-up (until the first bag began: imports, model,
Ray and its workers), the frames/s after it, and the mean seconds per bag inside a worker. Ray's
fixed cost is its start-up minus the sequential one; its per-bag cost is the difference in the
time after start-up, per bag, both at one thread (where the machine's load skews least).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rt_panoptic_ros.config import preset
from rt_panoptic_ros.model import RTPanoNet, save_checkpoint
from rt_panoptic_ros.runtime.machine import write_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bag import TOPIC, write_input_bag  # the bag benchmark's writer


def run_mode(exe: Path, bags: list[Path], out: Path, model: Path, extra: list[str]) -> dict:
    """One run of the console script over every bag; its figures from the summary it writes."""
    shutil.rmtree(out, ignore_errors=True)
    command = [str(exe), *map(str, bags), "--output-dir", str(out), "--image-topic", TOPIC,
               "--model", str(model), "--backend", "torch", *extra]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    done = [b for b in summary["bags"] if b["state"] == "done"]
    assert len(done) == len(bags), summary["bag_counts"]
    processing = summary["wall_seconds"] - summary["startup_seconds"]
    return {
        "wall_s": round(wall, 2),
        "startup_s": round(summary["startup_seconds"] + (wall - summary["wall_seconds"]), 2),
        "processing_s": round(processing, 2),
        "frames": summary["frames"],
        "fps_overall": round(summary["frames"] / wall, 3),
        "fps_after_startup": round(summary["frames"] / processing, 3),
        "seconds_per_bag_in_worker": round(float(np.mean([b["seconds"] for b in done])), 3),
        "workers_used": len({b["worker"] for b in done}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=8)
    parser.add_argument("--frames", type=int, default=6, help="frames per bag")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--preset", default="small_cityscapes")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--output", default=str(Path(__file__).with_name("fleet.json")))
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    modes = {
        "sequential": ["--threads-per-worker", str(cores)],
        "sequential_1_thread": ["--threads-per-worker", "1"],
        "ray_1_worker": ["--ray", "--workers", "1", "--threads-per-worker", str(cores)],
        "ray_1_worker_1_thread": ["--ray", "--workers", "1", "--threads-per-worker", "1"],
        "ray_2_workers": ["--ray", "--workers", "2", "--threads-per-worker", str(max(1, cores // 2))],
    }
    workdir = Path(tempfile.mkdtemp(prefix="fleet_bench_"))
    rng = np.random.default_rng(0)
    model = save_checkpoint(RTPanoNet(preset(args.preset)).eval(), workdir / "model.pt")
    bags = []
    for k in range(args.bags):
        frames = [
            rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.frames)
        ]
        bags.append(workdir / "in" / f"drive_{k:02d}")
        write_input_bag(bags[-1], frames, "mcap")
    exe = Path(sys.executable).with_name("rt-panoptic-bag")
    runs: dict[str, list[dict]] = {name: [] for name in modes}
    names = list(modes)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(run_mode(exe, bags, workdir / name, model, modes[name]))
            print(f"round {r + 1} {name}: {json.dumps(runs[name][-1])}", file=sys.stderr)

    def mean(name: str, key: str) -> float:
        return round(float(np.mean([run[key] for run in runs[name]])), 3)

    results = {
        name: {
            "options": " ".join(modes[name]),
            **{key: mean(name, key) for key in runs[name][0]},
            "runs": runs[name] if args.rounds > 1 else None,
        }
        for name in modes
    }
    seq, ray1, ray2 = (results[n] for n in ("sequential_1_thread", "ray_1_worker_1_thread", "ray_2_workers"))
    best_sequential = max(results["sequential"]["fps_after_startup"], seq["fps_after_startup"])
    analysis = {
        "compared": "Ray's overhead: ray_1_worker_1_thread vs sequential_1_thread; scaling: ray_2_workers "
        "vs ray_1_worker_1_thread and vs the faster sequential run",
        "scaling_ray_2_over_1_workers_after_startup": round(
            ray2["fps_after_startup"] / ray1["fps_after_startup"], 3
        ),
        "scaling_ray_2_workers_over_best_sequential_after_startup": round(
            ray2["fps_after_startup"] / best_sequential, 3
        ),
        "wall_ratio_best_sequential_over_ray_2_workers": round(
            min(results["sequential"]["wall_s"], seq["wall_s"]) / ray2["wall_s"], 3
        ),
        "ray_fixed_overhead_s": round(ray1["startup_s"] - seq["startup_s"], 2),
        "ray_per_bag_overhead_s": round((ray1["processing_s"] - seq["processing_s"]) / args.bags, 3),
        "ray_per_bag_overhead_in_worker_s": round(
            ray1["seconds_per_bag_in_worker"] - seq["seconds_per_bag_in_worker"], 3
        ),
    }
    write_benchmark(
        args.output,
        "rt-panoptic-bag over a fleet's bags: one process vs Ray with 1 and 2 workers (CPU)",
        preset=args.preset,
        weights="random",
        input=[args.height, args.width],
        bags=args.bags,
        frames_per_bag=args.frames,
        storage="mcap",
        rounds=args.rounds,
        modes=results,
        analysis=analysis,
        note="2-core machine shared with other developers' jobs: the numbers may be noisy (see the load "
        "average); each Ray run starts its own local cluster (ray.init), as on a laptop",
    )
    print(json.dumps(analysis, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
