"""Stable ids, measured: STQ / AQ, id switches and id consistency with tracking vs per-frame ids.

usage: python benchmarks/video_tracking.py [--model models/small_synthetic.pt] [--sequences 8]
           [--frames 30] [--seed 101] [--height 256 --width 512] [--output benchmarks/video_tracking.json]

Held-out synthetic videos (``rt-panoptic-synth --video``, a seed the bundled model never saw:
things move, cross, occlude each other, leave the view and come back) are segmented by the
bundled model once per set-up, written as COCO panoptic predictions (``run_inference``, what
``rt-panoptic-infer`` does, the tracks restarting at each video) and scored by
``rt-panoptic-eval --video``:

- ``per_frame``: today's ids without tracking, each frame numbered 1..K by score;
- ``tracked``: ``PanopticTracker`` with the node's defaults (``max_age`` 30, IoU 0.3);
- ``tracked_max_age_0``: the same without memory for unseen objects (an object missed for one
  frame starts a new track), to show what ``max_age`` buys on occlusions and exits.

Reported per set-up: STQ, AQ, SQ (Weber et al. 2021), id switches, and id consistency: of the
consecutive-frame pairs in which a ground-truth object is matched (IoU > 0.5) in both frames,
the fraction whose predicted id is the same (the issue's aim: >= 0.95); plus PQ of the frames
as stills (the same in every set-up: tracking changes ids, not masks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rt_panoptic_ros.infer import list_images, run_inference
from rt_panoptic_ros.runtime.machine import write_benchmark
from rt_panoptic_ros.runtime.predictor import Predictor
from rt_panoptic_ros.tracking import TrackingSettings

ROOT = Path(__file__).resolve().parents[1]
SETUPS: dict[str, TrackingSettings | None] = {
    "per_frame": None,
    "tracked": TrackingSettings(),
    "tracked_max_age_0": TrackingSettings(max_age=0),
}


def tool(name: str, *args: str) -> None:
    """A console script of this venv, its output shown only when it fails."""
    command = [str(Path(sys.executable).with_name(name)), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "small_synthetic.pt"))
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--output", default=str(Path(__file__).with_name("video_tracking.json")))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="video_tracking_"))
    videos = work / "videos"
    tool(
        "rt-panoptic-synth", str(videos), "--video", "--sequences", str(args.sequences), "--frames",
        str(args.frames), "--seed", str(args.seed), "--height", str(args.height), "--width", str(args.width),
    )  # fmt: skip
    gt = json.loads((videos / "panoptic.json").read_text())
    video_of = {Path(image["file_name"]).stem: image["video_id"] for image in gt["images"]}
    images = list_images(videos / "images")  # names sort by video, then frame
    predictor = Predictor(args.model, backend="torch")

    results = {}
    for name, tracking in SETUPS.items():
        out = work / name
        run_inference(predictor, images, out, tracking=tracking, sequence_of=lambda path: video_of[path.stem])
        scores = work / f"{name}.json"
        tool(
            "rt-panoptic-eval", "--video", "--gt-json", str(videos / "panoptic.json"), "--gt-dir",
            str(videos / "panoptic"), "--pred-json", str(out / "panoptic.json"), "--pred-dir",
            str(out / "panoptic"), "--output", str(scores), "--workers", "2",
        )  # fmt: skip
        document = json.loads(scores.read_text())
        stq = document["STQ"]
        results[name] = {
            "tracking": None if tracking is None else dataclasses.asdict(tracking),
            **{key: round(stq[key], 4) for key in ("stq", "aq", "sq", "id_consistency")},
            "id_switches": stq["id_switches"],
            "consistent_pairs": f"{stq['consistent_pairs']}/{stq['matched_pairs']}",
            "gt_tracks": stq["tracks"],
            "pq_as_stills": round(document["All"]["pq"], 4),
        }
        print(name, json.dumps(results[name]), file=sys.stderr)

    write_benchmark(
        args.output,
        "panoptic tracking on held-out synthetic videos: STQ / AQ / id switches / id consistency, "
        "tracked vs per-frame ids",
        model=Path(args.model).name, videos=args.sequences, frames_per_video=args.frames, seed=args.seed,
        image=[args.height, args.width], results=results,
    )  # fmt: skip


if __name__ == "__main__":
    main()
