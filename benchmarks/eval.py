"""Evaluator throughput: rt-panoptic-eval's evaluator versus cityscapesscripts', side by side.

usage: python benchmarks/eval.py [--num 50] [--height 512 --width 1024] [--runs 3] [--warmup 1]
           [--workers 0] [--output benchmarks/eval.json]

Writes ``--num`` synthetic ground-truth images (``rt-panoptic-synth``'s generator) and a
simulated prediction for each (``perturb.py``: shifted, eroded, relabelled, missed and
spurious segments, VOID holes) into a temporary folder, then scores the same files with

- ours in one process and in ``--workers`` processes (0 = one per core), and
- cityscapesscripts' ``evaluatePanoptic`` (a port of panopticapi's ``pq_compute``; it starts a
  pool of one process per core) and its single-core loop ``pq_compute_single_core``,

end to end (JSON parsing, PNG decoding, statistics), alternating the evaluators in each of
``--runs`` rounds after ``--warmup`` untimed ones (which start our fork server, once per
process: about 3 s, as importing ``rt_panoptic_ros`` imports torch). Reports the median
images/s and that all agree on PQ. The JSON holds the command and the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as cs

from rt_panoptic_ros.runtime.machine import write_benchmark
from rt_panoptic_ros.training.data.perturb import write_prediction_pairs
from rt_panoptic_ros.training.evaluation.files import default_workers, evaluate_files, single_threaded_opencv


def make_pairs(root: Path, num: int, height: int, width: int) -> tuple[Path, Path, Path, Path]:
    """Synthetic ground truth (seed 0) and one simulated prediction per image (seed 1)."""
    return write_prediction_pairs(root, num, height, width, gt_seed=0, pred_seed=1)


def cityscapes_single_core(gt_json: Path, gt_dir: Path, pred_json: Path, pred_dir: Path) -> dict:
    """cityscapesscripts' per-image loop in this process (evaluatePanoptic minus its pool)."""
    gt, pred = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    categories = {c["id"]: c for c in gt["categories"]}
    preds = {a["image_id"]: a for a in pred["annotations"]}
    pairs = [(a, preds[a["image_id"]]) for a in gt["annotations"]]
    stat = cs.pq_compute_single_core(0, pairs, str(gt_dir), str(pred_dir), categories)
    return cs.average_pq(stat, categories)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=50)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="ours, multi-process; 0 = one per core")
    parser.add_argument("--output", default=str(Path(__file__).with_name("eval.json")))
    args = parser.parse_args()
    workers = args.workers or default_workers()
    single_threaded_opencv()  # as rt-panoptic-eval does (cityscapesscripts decodes with PIL)

    load_before = os.getloadavg()  # other jobs on a shared machine slow every evaluator
    with tempfile.TemporaryDirectory() as tmp:
        files = make_pairs(Path(tmp), args.num, args.height, args.width)
        runners: dict[str, Callable[[], dict]] = {
            "rt_panoptic_ros, 1 process": lambda: evaluate_files(*files, workers=1, progress=False)[0],
            f"rt_panoptic_ros, {workers} processes": lambda: evaluate_files(
                *files, workers=workers, progress=False
            )[0],
            "cityscapesscripts pq_compute_single_core, 1 process": lambda: cityscapes_single_core(*files),
            f"cityscapesscripts evaluatePanoptic, {cs.multiprocessing.cpu_count()} processes": lambda: (
                cs.evaluatePanoptic(*(str(f) for f in files), str(Path(tmp) / "cs.json"))
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in runners}
        results: dict[str, dict] = {}
        for round_ in range(args.warmup + args.runs):
            for name, run in runners.items():
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # cityscapesscripts prints a lot
                    results[name] = run()
                if round_ >= args.warmup:
                    times[name].append(time.perf_counter() - start)

    reference = results[next(n for n in runners if n.startswith("cityscapesscripts evaluatePanoptic"))]
    rows = []
    for name in runners:
        median = statistics.median(times[name])
        difference = max(abs(results[name][g]["pq"] - reference[g]["pq"]) for g in ("All", "Things", "Stuff"))
        rows.append({
            "evaluator": name,
            "median_s": round(median, 3),
            "images_per_s": round(args.num / median, 1),
            "max_abs_pq_difference_vs_cityscapesscripts": difference,
        })  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr)
    baseline = rows[3]["images_per_s"]
    for row in rows:
        row["speedup_vs_cityscapesscripts_evaluatePanoptic"] = round(row["images_per_s"] / baseline, 2)
    write_benchmark(
        args.output, "panoptic evaluator throughput (PQ/SQ/RQ; ours also mIoU), end to end from files",
        images=args.num, size=[args.height, args.width], runs=args.runs, warmup=args.warmup,
        pq={g: reference[g]["pq"] for g in ("All", "Things", "Stuff")},
        load_average_before=list(load_before), results=rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
