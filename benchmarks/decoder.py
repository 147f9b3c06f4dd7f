"""Decoder latency on the CPU, side by side: this decoder, an earlier one, the original code.

usage: python benchmarks/decoder.py [--queries 10 50 100] [--sizes 512x1024 1024x2048]
           [--runs 10] [--baseline REV] [--tri-repo PATH] [--output benchmarks/decoder.json]

The head outputs are the hand-built scenes of the test suite (test/scenes.py): K cars and
people laid out in rows over a road/sky background, each detected by one seed, so the
decoder really produces K instances with masks of realistic size.

Three decoders run on the same head outputs, the first two interleaved call by call so that
the machine's noise hits them alike; the JSON keeps medians, p90s and the ratios:

- ``decoder``: ``rt_panoptic_ros.panoptic.decode`` of this tree (decisions at full resolution);
- ``baseline``: the package's decoder at git revision ``--baseline`` (default: the last one that
  decided per stride-4 cell and upsampled the decided maps), loaded from ``git show`` under
  another module name;
- ``original``: ``PanopticFromDenseBox.process`` of TRI-ML/realtime_panoptic when
  ``--tri-repo`` points at a checkout of it (never vendored), timed after the other two on
  every case (its gigabytes of temporaries slow whatever runs after them). It runs on torch 2.x with
  ``candidate_inds.view`` read as ``.reshape`` (patched in memory here) and
  ``torch.cuda.synchronize`` made a no-op on the CPU. It computes full-resolution masks
  and no fusion.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))

from scenes import CAR, CLASSES, PERSON, THINGS, Obj, centre_seed, make_outputs, scene_config  # noqa: E402

from rt_panoptic_ros.config import FPN_STRIDES  # noqa: E402
from rt_panoptic_ros.panoptic import decode  # noqa: E402
from rt_panoptic_ros.panoptic.boxes import locations  # noqa: E402
from rt_panoptic_ros.percentile import percentile  # noqa: E402
from rt_panoptic_ros.runtime.machine import write_benchmark  # noqa: E402

#: The last revision whose decoder decided per stride-4 cell (before full-resolution decisions).
CELL_DECODER_REVISION = "f24cfb9"


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


def load_baseline(revision: str):
    """The ``decode`` of ``rt_panoptic_ros.panoptic`` at a git revision, as module ``baseline_panoptic``."""
    folder = Path(tempfile.mkdtemp(prefix="baseline_panoptic_")) / "baseline_panoptic"
    folder.mkdir()
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", revision, "rt_panoptic_ros/panoptic/"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for name in names:
        source = subprocess.run(
            ["git", "show", f"{revision}:{name}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        (folder / Path(name).name).write_text(source.replace("rt_panoptic_ros.panoptic", "baseline_panoptic"))
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module("baseline_panoptic").decode


def load_original(repo: Path):
    """TRI's ``PanopticFromDenseBox`` from a checkout, made to run on the CPU with torch 2.x."""
    path = repo / "realtime_panoptic" / "models" / "panoptic_from_dense_box.py"
    sys.path.insert(0, str(repo))
    source = path.read_text().replace("candidate_inds.view(N, -1)", "candidate_inds.reshape(N, -1)")
    module = types.ModuleType("tri_panoptic_from_dense_box")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)  # the original, patched
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *args, **kwargs: None
    return module.PanopticFromDenseBox


def original_call(processor_class, outputs, cfg, size):
    """A closure running the original post-processing on ``outputs`` with ``cfg``'s thresholds."""
    d = cfg.decoder
    things = cfg.dataset.thing_ids
    processor = processor_class(
        pre_nms_thresh=d.pre_nms_thresh, pre_nms_top_n=d.pre_nms_top_n, nms_thresh=d.nms_thresh,
        fpn_post_nms_top_n=d.max_detections, min_size=0, num_classes=len(CLASSES),
        mask_thresh=d.mask_thresh, instance_id_range=[min(things), max(things)], is_training=False,
    )  # fmt: skip
    h4, w4 = outputs.levelness_logits.shape[-2:]
    level_locations = [
        locations(c.shape[-2], c.shape[-1], s, c.device)
        for c, s in zip(outputs.box_cls, FPN_STRIDES, strict=True)
    ]
    level_locations.append(locations(h4, w4, 4, outputs.levelness_logits.device))
    return lambda: processor.process(
        level_locations, outputs.box_cls, outputs.box_reg, outputs.centerness, outputs.levelness_logits,
        outputs.semantic_logits, [size],
    )  # fmt: skip


def time_interleaved(calls: dict, runs: int) -> dict[str, list[float]]:
    """Milliseconds per call, the calls interleaved so that the machine's noise hits them alike."""
    times = {name: [] for name in calls}
    for _ in range(2):  # warm-up
        for call in calls.values():
            call()
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, float]:
    """Median and p90 of each call's times."""
    out = {}
    for name, values in times.items():
        values = sorted(values)
        out[f"{name}_median_ms"] = round(statistics.median(values), 1)
        out[f"{name}_p90_ms"] = round(percentile(values, 90), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--sizes", nargs="+", default=["512x1024", "1024x2048"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline", default=CELL_DECODER_REVISION, help="git revision to compare with")
    parser.add_argument("--tri-repo", type=Path, help="a checkout of TRI-ML/realtime_panoptic")
    parser.add_argument(
        "--box-map-background", default="exclude", choices=("exclude", "tri"),
        help="this decoder's rule (the baseline knows only 'exclude': like for like by default)",
    )  # fmt: skip
    parser.add_argument("--output", default=str(Path(__file__).with_name("decoder.json")))
    args = parser.parse_args()

    assert tuple(THINGS) == (2, 3), "the original wants the thing classes last"
    cfg = scene_config(box_map_background=args.box_map_background, instance_score_thresh=0.0)
    baseline = load_baseline(args.baseline)
    original = load_original(args.tri_repo) if args.tri_repo else None
    cases = [
        (int(size.split("x")[0]), int(size.split("x")[1]), queries)
        for size in args.sizes
        for queries in args.queries
    ]
    rows = []
    for height, width, queries in cases:
        outputs = street_scene(height, width, queries)
        calls = {
            "decoder": functools.partial(decode, outputs, cfg, (height, width)),
            "baseline": functools.partial(baseline, outputs, cfg, (height, width)),
        }
        row = {"height": height, "width": width, "queries": queries}
        row["instances"] = len(calls["decoder"]()[0].segments)
        row.update(summarise(time_interleaved(calls, args.runs)))
        row["decoder_over_baseline"] = round(row["decoder_median_ms"] / row["baseline_median_ms"], 2)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    # The original last, on its own: its gigabytes of temporaries leave the allocator in a
    # state that slows whatever runs after them.
    for row, (height, width, queries) in zip(rows, cases, strict=True) if original is not None else ():
        outputs = street_scene(height, width, queries)
        call = original_call(original, outputs, cfg, (height, width))
        row.update(summarise(time_interleaved({"original": call}, args.runs)))
        row["original_over_decoder"] = round(row["original_median_ms"] / row["decoder_median_ms"], 1)
        row["original_over_baseline"] = round(row["original_median_ms"] / row["baseline_median_ms"], 1)
        print(json.dumps(row), file=sys.stderr)
    write_benchmark(
        args.output,
        "panoptic decoders side by side, CPU, batch 1, float32: rt_panoptic_ros.panoptic.decode "
        f"(decoder), the same package at {args.baseline} (baseline), TRI's PanopticFromDenseBox.process "
        "(original, no fusion)",
        runs=args.runs, decoder=dataclasses.asdict(cfg.decoder), results=rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
