"""Training throughput on the CPU: the synthetic config, 1 and 2 processes (torchrun, gloo).

usage: python benchmarks/train.py [--steps 30] [--warmup 10] [--num 64] [--output benchmarks/train.json]

Writes ``--num`` synthetic 256x512 images (``rt-panoptic-synth``'s generator) into a temporary
folder and trains ``config/training/synthetic.yaml`` on them for ``--warmup + --steps`` steps,
once with ``rt-panoptic-train`` in one process and once under ``torchrun --nproc-per-node 2``
(the same global batch split over the processes). Images/s is taken between the end of the
warm-up step and the last step from the trainer's own per-step log (``elapsed`` seconds since
the loop started), so start-up, data loader start and the first slow steps are left out.
The JSON holds the commands, the machine and its load average (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from rt_panoptic_ros.runtime.machine import write_benchmark
from rt_panoptic_ros.training.data import write_dataset
from rt_panoptic_ros.training.train_config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "training" / "synthetic.yaml"
_LINE = re.compile(r"^step (\d+)/\d+ .* images/s, ([0-9.]+) s$")


def run(command: list[str], warmup: int, steps: int, batch: int) -> dict[str, float]:
    """Run one training command; images/s between step ``warmup`` and the last step."""
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    elapsed = {int(m[1]): float(m[2]) for m in map(_LINE.match, result.stderr.splitlines()) if m}
    last = max(elapsed)
    seconds = elapsed[last] - elapsed[warmup]
    return {
        "images_per_s": round((last - warmup) * batch / seconds, 3),
        "seconds_per_step": round(seconds / (last - warmup), 4),
        "timed_steps": last - warmup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed first steps")
    parser.add_argument("--num", type=int, default=64, help="synthetic images to train on")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "train.json"))
    args = parser.parse_args()
    cfg = load_config(CONFIG)
    batch = cfg.solver.batch_size
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synthetic"
        write_dataset(data, num=args.num, seed=0, height=256, width=512, progress=False)
        common = [
            "--config", str(CONFIG), "--max-steps", str(args.warmup + args.steps),
            f"data.root={data}", "data.val_root=", "run.log_every=1", "run.checkpoint_every=100000",
        ]  # fmt: skip
        one = [str(bin_dir / "rt-panoptic-train"), "--output-dir", f"{tmp}/one", *common]
        two = [
            str(bin_dir / "torchrun"), "--standalone", "--nproc-per-node", "2",
            "-m", "rt_panoptic_ros.training.train", "--output-dir", f"{tmp}/two", *common,
        ]  # fmt: skip
        env_note = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset (torch: one per core)")}
        results = {
            "1_process": {"command": " ".join(one), **run(one, args.warmup, args.steps, batch)},
            "2_processes": {"command": " ".join(two), **run(two, args.warmup, args.steps, batch)},
        }
    write_benchmark(
        args.output,
        "training throughput, CPU, config/training/synthetic.yaml",
        config={
            "image_size": list(cfg.data.size),
            "batch_size": batch,
            "backbone": cfg.model.backbone,
            "source_images": "256x512 synthetic",
        },
        warmup_steps=args.warmup,
        environment=env_note,
        results=results,
    )


if __name__ == "__main__":
    main()
